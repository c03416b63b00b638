"""JSON document -> training text, as the paper describes (PAPER.md section 2).

Passages are joined (the ``nuance`` labels are dropped); then the question with a randomly chosen
lead-in, the four options with a randomly chosen marker style, an answer line in a random form, and the
step-by-step explanation, left out with a configured probability. Every choice comes from a generator
seeded per record, so the same record always renders to the same text.
"""

from __future__ import annotations

import random
from typing import Any

from workflow_scripts.config.generate import RenderConfig
from workflow_scripts.core.hashing import hash_value
from workflow_scripts.generate.templates import ANSWER_LABELS

_ROMAN = ("i", "ii", "iii", "iv")


def render_seed(global_seed: int, record_id: str) -> int:
    return int(hash_value([global_seed, "render", record_id])[:16], 16)


def _label(marker: str, index: int) -> str | None:
    """How option ``index`` is labelled under ``marker`` (None: the style has no label)."""
    return {
        "number_dot": f"{index + 1}.",
        "number_paren": f"({index + 1})",
        "letter_dot": f"{ANSWER_LABELS[index]}.",
        "letter_paren": f"({ANSWER_LABELS[index]})",
        "roman": f"{_ROMAN[index]}.",
        "bullet": "-",
        "none": "",
    }[marker]


def _answer_label(marker: str, index: int) -> str | None:
    return {
        "number_dot": str(index + 1),
        "number_paren": f"({index + 1})",
        "letter_dot": ANSWER_LABELS[index],
        "letter_paren": f"({ANSWER_LABELS[index]})",
        "roman": _ROMAN[index],
    }.get(marker)


def render_document(document: dict[str, Any], config: RenderConfig, seed: int) -> str:
    """Training text for one parsed generation; ``seed`` fixes every random choice."""
    rng = random.Random(seed)
    passages = config.passage_separator.join(p["passage"].strip() for p in document["passages"])
    lead_in = rng.choice(config.question_lead_ins)
    question = f"{lead_in} {document['question'].strip()}".strip()
    marker = rng.choice(config.option_markers)
    options = [str(o).strip() for o in document["options"]]
    option_lines = "\n".join(f"{_label(marker, i)} {text}".strip() for i, text in enumerate(options))
    answer_index = ANSWER_LABELS.index(document["answer"])
    form = rng.choice(config.answer_forms)
    label = _answer_label(marker, answer_index)
    if label is None or form == "text":
        answer = options[answer_index]
    elif form == "label":
        answer = label
    else:
        answer = f"{label} {options[answer_index]}"
    answer_line = f"{rng.choice(config.answer_prefixes)} {answer}".strip()
    blocks = [passages, question, option_lines, answer_line]
    # Draw both values every time so later draws do not depend on whether the explanation is dropped.
    drop = rng.random() < config.explanation_drop_probability
    prefix = rng.choice(config.explanation_prefixes)
    if not drop:
        blocks.append(f"{prefix} {document['explanation'].strip()}".strip())
    return config.block_separator.join(blocks)


def check_document(document: object) -> str | None:
    """Reasons a schema-valid document is still unusable as training text (None when it is fine)."""
    if not isinstance(document, dict):
        return "document is not a JSON object"
    try:
        fields = [p["passage"] for p in document["passages"]] + [document["question"], document["explanation"]]
        fields += list(document["options"])
        if document["answer"] not in ANSWER_LABELS or len(document["options"]) != 4:
            return "answer label or option count out of range"
    except (KeyError, TypeError):
        return "document lacks passages, question, options, answer or explanation"
    if any(not isinstance(f, str) or not f.strip() for f in fields):
        return "a passage, the question, an option or the explanation is blank"
    return None
