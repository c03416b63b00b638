"""The paper's four prompt families, the JSON schema they ask for, and the per-generation plan.

Families (PAPER.md section 2): ``topic`` (textbook), ``topic_styles`` (one of four styles),
``topic_styles_persona`` (adds candidate readers; the model picks one), ``multi_topic_styles_persona``
(several topics in one prompt; the model combines the ones that fit). Every prompt asks for one JSON
document: 3-5 passages of increasing nuance (``{"nuance", "passage"}``), one multiple-choice question
with four options, the answer label and a step-by-step explanation. The wording is this project's own.

Everything random about a prompt (style, personas, companion topics) is drawn from a generator seeded
by (global seed, topic id, generation index) only, so generation ``g`` of a topic is the same request
in every experiment that uses the same template and generator: G=20 reuses the G=10 requests.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from workflow_scripts.config.generate import PromptConfig, SchemaBounds
from workflow_scripts.core.artifacts import InputError
from workflow_scripts.core.hashing import hash_value
from workflow_scripts.core.inputs import read_personas

TEMPLATES = ("topic", "topic_styles", "topic_styles_persona", "multi_topic_styles_persona")
ANSWER_LABELS = ("A", "B", "C", "D")

SYSTEM_PROMPT = (
    "You write original educational material that will be used to teach language models. "
    "Answer with exactly one JSON object that follows the requested structure, and nothing else."
)

STYLE_GUIDES = {
    "narrative_textbook": (
        "a narrative textbook: carry the ideas through a flowing, story-like account with concrete "
        "situations and, where it helps, characters who meet the problem"
    ),
    "college_textbook": (
        "an academic textbook for college students: precise and rigorous, with clear definitions, "
        "careful reasoning and worked examples"
    ),
    "blog_post": (
        "a blog post: lively and conversational, written for curious non-specialists, with vivid "
        "examples and a personal voice"
    ),
    "wikihow": (
        "a WikiHow article: practical and task-oriented, organised as steps and tips a reader can act on"
    ),
}
TEXTBOOK_GUIDE = "a textbook: clear, accurate and well organised, in the manner of a good school textbook"

_TASK = (
    "Write {n_passages} passages. Each passage goes one step deeper than the one before it, so that the "
    "last one treats the subtlest point. For every passage give the nuance it teaches as a short phrase "
    "(\"nuance\") and the passage itself (\"passage\"). Let the keywords steer what you cover.\n"
    "Then write one multiple-choice question that checks understanding of the passages, with exactly four "
    "answer options (\"options\", in order A, B, C, D), the letter of the correct option (\"answer\") and an "
    "explanation that reasons to the answer step by step (\"explanation\")."
)
_FORMAT = "Reply with JSON only, shaped like this:\n{shape}"

# The form layout (``structured_output: form``, for small local models): short instructions, the topic
# last, no JSON and no form shown (the backend writes the form's labels itself).
FORM_SYSTEM_PROMPT = "You write short, clear and correct teaching texts. You fill in forms line by line."
_FORM_TASK = (
    "Fill in the form: {n_passages} passages, each one going a step deeper than the one before; then one "
    "question about the passages with four options, the letter of the correct option, and a short "
    "explanation. Write about the topic and use its keywords."
)


@dataclass(frozen=True)
class Topic:
    topic_id: str
    path: str
    keywords: tuple[str, ...]

    def display(self, max_keywords: int) -> str:
        keywords = ", ".join(self.keywords[:max_keywords]) or "(none given)"
        return f"{' > '.join(part.strip() for part in self.path.split('/') if part.strip())} " \
               f"(keywords: {keywords})"


@dataclass(frozen=True)
class GenerationPlan:
    """What one generation asks for; everything here is part of the request (hence the cache key)."""

    template: str
    topic: Topic
    generation_index: int
    style: str | None
    personas: tuple[str, ...] = ()
    companions: tuple[Topic, ...] = ()
    messages: tuple[dict[str, str], ...] = field(default=(), compare=False)
    json_schema: dict[str, Any] = field(default_factory=dict, compare=False)


# --- personas ---------------------------------------------------------------------------------------------


def default_personas_path() -> Path:
    return Path(str(resources.files("workflow_scripts") / "resources" / "personas.jsonl"))


def load_personas(path: str | Path = "builtin") -> list[str]:
    """Personas from a JSONL file of ``{"persona": "..."}`` (one per line); 'builtin' = the shipped file."""
    return read_personas(default_personas_path() if str(path) == "builtin" else Path(path))


# --- schema -----------------------------------------------------------------------------------------------


def _string(max_chars: int, bounds: SchemaBounds) -> dict[str, Any]:
    if bounds.string_mode == "free":
        return {"type": "string"}
    # No quotes, backslashes or control characters: the string needs no escapes, and a bounded repeat
    # forces a random model to close it (FACTS.md: prefer patterns to maxLength).
    return {"type": "string", "pattern": f'^[^"\\\\\\x00-\\x1f]{{1,{max_chars}}}$'}


def document_schema(bounds: SchemaBounds, n_personas: int = 0) -> dict[str, Any]:
    """JSON schema of the generated document; with personas, ``audience`` is the chosen reader's number."""
    properties: dict[str, Any] = {}
    if n_personas:
        properties["audience"] = {"type": "integer", "enum": list(range(1, n_personas + 1)), "title": "Reader"}
    # titles name the lines of the form layout (structured_output: form); other backends ignore them
    properties["passages"] = {
        "type": "array",
        "minItems": bounds.min_passages,
        "maxItems": bounds.max_passages,
        "items": {
            "type": "object",
            "title": "Passage {n}",
            "properties": {
                "nuance": {**_string(bounds.max_nuance_chars, bounds), "title": "heading"},
                "passage": {**_string(bounds.max_passage_chars, bounds), "title": ""},
            },
            "required": ["nuance", "passage"],
            "additionalProperties": False,
        },
    }
    properties["question"] = _string(bounds.max_question_chars, bounds)
    properties["options"] = {"type": "array", "minItems": 4, "maxItems": 4,
                             "items": {**_string(bounds.max_option_chars, bounds), "title": "Option {letter}"}}
    properties["answer"] = {"type": "string", "enum": list(ANSWER_LABELS)}
    properties["explanation"] = _string(bounds.max_explanation_chars, bounds)
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def _shape(n_personas: int) -> str:
    shape: dict[str, Any] = {}
    if n_personas:
        shape["audience"] = "<number of the chosen reader>"
    shape.update({
        "passages": [{"nuance": "<what this passage teaches>", "passage": "<text>"}, "..."],
        "question": "<question>",
        "options": ["<option A>", "<option B>", "<option C>", "<option D>"],
        "answer": "<A, B, C or D>",
        "explanation": "<step-by-step reasoning>",
    })
    return json.dumps(shape, ensure_ascii=False)


# --- prompts ----------------------------------------------------------------------------------------------


def _n_passages(bounds: SchemaBounds) -> str:
    if bounds.min_passages == bounds.max_passages:
        return str(bounds.min_passages)
    return f"between {bounds.min_passages} and {bounds.max_passages}"


def build_user_prompt(plan: GenerationPlan, prompts: PromptConfig, bounds: SchemaBounds,
                      layout: str = "json") -> str:
    """The fixed instructions first and what varies per request (style, readers, topics) last, so requests
    of one template share a long prefix (providers' prompt caches, vLLM's prefix cache)."""
    if layout == "form":
        return build_form_prompt(plan, prompts, bounds)
    guide = TEXTBOOK_GUIDE if plan.style is None else STYLE_GUIDES[plan.style]
    parts = [_TASK.format(n_passages=_n_passages(bounds)), _FORMAT.format(shape=_shape(len(plan.personas)))]
    if plan.personas:
        parts.append("From the possible readers listed below, choose the one this material would suit best, put "
                     "their number in \"audience\", and shape the tone, examples and depth for that reader.")
    if plan.template == "multi_topic_styles_persona":
        parts.append("Of the topics listed below, decide which belong together and weave those into one piece of "
                     "writing; if none fit together, choose the single most promising topic and write about it "
                     "alone.")
    parts.append(f"Write in the manner of {guide}.")
    if plan.personas:
        parts.append("Possible readers:\n" + "\n".join(f"{i}. {p}" for i, p in enumerate(plan.personas, start=1)))
    if plan.template == "multi_topic_styles_persona":
        topics = "\n".join(f"- {t.display(prompts.max_keywords)}" for t in (plan.topic, *plan.companions))
        parts.append(f"Topics:\n{topics}")
    else:
        parts.append(f"Topic: {plan.topic.display(prompts.max_keywords)}")
    return "\n\n".join(parts)


def build_form_prompt(plan: GenerationPlan, prompts: PromptConfig, bounds: SchemaBounds) -> str:
    """The same request as :func:`build_user_prompt`, in few words, the topic last."""
    guide = TEXTBOOK_GUIDE if plan.style is None else STYLE_GUIDES[plan.style]
    parts = []
    if plan.personas:
        readers = "; ".join(f"reader {i} is {p[:1].lower()}{p[1:]}" for i, p in enumerate(plan.personas, start=1))
        parts.append(f"Choose who you write for: {readers}. Give the number of your reader on the \"Reader\" "
                     "line and write for that reader.")
    parts.append(f"Write in the manner of {guide.split(':')[0]}. "
                 + _FORM_TASK.format(n_passages=bounds.min_passages))
    if plan.companions:
        others = "; ".join(t.display(prompts.max_keywords) for t in plan.companions)
        parts.append(f"Related topics you may combine with the main one if they fit: {others}")
    # the topic comes last: a small model follows what it read most recently
    parts.append(f"Topic: {plan.topic.display(prompts.max_keywords)}")
    return "\n\n".join(parts)


def _rng(global_seed: int, topic_id: str, generation_index: int, purpose: str) -> random.Random:
    return random.Random(int(hash_value([global_seed, topic_id, generation_index, purpose])[:16], 16))


def choose_style(template: str, prompts: PromptConfig, global_seed: int, topic_id: str, g: int) -> str | None:
    if template == "topic":
        return None
    styles = list(prompts.styles)
    if prompts.style_assignment == "round_robin":
        offset = int(hash_value([global_seed, topic_id, "style-offset"])[:8], 16)
        return styles[(g + offset) % len(styles)]
    return _rng(global_seed, topic_id, g, "style").choice(styles)


class TopicPool:
    """The experiment's topics, indexed by domain (first path component) for companion sampling."""

    def __init__(self, topics: Sequence[Topic]) -> None:
        self.topics = list(topics)
        self.by_domain: dict[str, list[Topic]] = {}
        for topic in self.topics:
            self.by_domain.setdefault(_domain(topic), []).append(topic)


def _domain(topic: Topic) -> str:
    return topic.path.split("/")[0].strip()


def _sample_others(candidates: Sequence[Topic], topic: Topic, wanted: int, rng: random.Random) -> tuple[Topic, ...]:
    # Draw one extra so that dropping the topic itself still leaves enough (O(wanted), not O(pool)).
    picks = [candidates[i] for i in rng.sample(range(len(candidates)), min(wanted + 1, len(candidates)))]
    return tuple(t for t in picks if t.topic_id != topic.topic_id)[:wanted]


def choose_companions(topic: Topic, pool: TopicPool, prompts: PromptConfig, rng: random.Random
                      ) -> tuple[Topic, ...]:
    wanted = min(prompts.topics_per_prompt - 1, len(pool.topics) - 1)
    if wanted <= 0:
        return ()
    if prompts.multi_topic_companions == "same_domain":
        near = pool.by_domain.get(_domain(topic), [])
        if len(near) - 1 >= wanted:
            return _sample_others(near, topic, wanted, rng)
    return _sample_others(pool.topics, topic, wanted, rng)


def plan_generation(
    template: str,
    topic: Topic,
    generation_index: int,
    *,
    prompts: PromptConfig,
    bounds: SchemaBounds,
    personas: Sequence[str],
    global_seed: int,
    topic_pool: TopicPool | Sequence[Topic] = (),
    layout: str = "json",
) -> GenerationPlan:
    """The request for generation ``generation_index`` of ``topic`` under ``template``; ``layout`` "form"
    words it for a backend that fills the schema as a form (small local models)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r} (known: {TEMPLATES})")
    style = choose_style(template, prompts, global_seed, topic.topic_id, generation_index)
    chosen: tuple[str, ...] = ()
    if template in ("topic_styles_persona", "multi_topic_styles_persona"):
        if not personas:
            raise InputError(f"template {template!r} needs personas but the persona list is empty")
        rng = _rng(global_seed, topic.topic_id, generation_index, "personas")
        chosen = tuple(rng.sample(list(personas), min(prompts.personas_per_prompt, len(personas))))
    companions: tuple[Topic, ...] = ()
    if template == "multi_topic_styles_persona":
        rng = _rng(global_seed, topic.topic_id, generation_index, "companions")
        pool = topic_pool if isinstance(topic_pool, TopicPool) else TopicPool(topic_pool)
        companions = choose_companions(topic, pool, prompts, rng)
    plan = GenerationPlan(template=template, topic=topic, generation_index=generation_index, style=style,
                          personas=chosen, companions=companions)
    messages = (
        {"role": "system", "content": FORM_SYSTEM_PROMPT if layout == "form" else SYSTEM_PROMPT},
        {"role": "user", "content": build_user_prompt(plan, prompts, bounds, layout)},
    )
    return GenerationPlan(template=template, topic=topic, generation_index=generation_index, style=style,
                          personas=chosen, companions=companions, messages=messages,
                          json_schema=document_schema(bounds, len(chosen)))


def chosen_persona(plan: GenerationPlan, document: dict[str, Any] | None) -> str | None:
    """The persona the model picked as its audience (None without personas or a parsed document)."""
    if not plan.personas or not isinstance(document, dict):
        return None
    index = document.get("audience")
    if isinstance(index, int) and 1 <= index <= len(plan.personas):
        return plan.personas[index - 1]
    return None
