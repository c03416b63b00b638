"""The LLM requests a configuration will send: counted from the grid, looked up in the cache, tokens estimated.

Generation: one first-attempt request per (topic, generation) of every generated experiment, built exactly as
the generate stage builds it (``plan_generation``, ``request_seed``, ``request_key``), so its content address is
the stage's. Topic samples are nested prefixes of one seeded order and a request depends only on (generator,
template, topic, generation index) (plus the topic pool for multi-topic prompts), so experiments of one group
share the requests of the smaller rectangle T x G they have in common: that is counted exactly without building
every request. Keys are built (and looked up in the cache) for every request of a group up to
``plan.cache_lookup_limit``, for an even sample above it. Prompt tokens come from the generator's own tokenizer
on rendered prompts (``plan.sample_requests`` of them per group, the mean extrapolated) when it is available
locally, else from the characters (4 a token). The judge's and the topic extractor's requests are counted from
their settings; their prompts depend on earlier answers, so their tokens are estimated from the prompt sizes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from workflow_scripts.config import PipelineConfig
from workflow_scripts.config.root import CHARS_PER_TOKEN, PROMPT_OVERHEAD_CHARS
from workflow_scripts.core.stages import artifact, builtin_topics_path
from workflow_scripts.generate.render import check_document
from workflow_scripts.generate.stage import generation_request, request_seed
from workflow_scripts.generate.templates import Topic, TopicPool, load_personas, plan_generation
from workflow_scripts.llm.builtin import BUILTIN_DIR
from workflow_scripts.llm.cache import RequestCache, request_key
from workflow_scripts.llm.form import prompt_layout
from workflow_scripts.llm.loader import spec_identity
from workflow_scripts.llm.types import LLMRequest, LLMResponse

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD_TOKENS = 4  # role markers of one chat message, for the character estimate


@dataclass
class RequestLine:
    """One row of the plan's request table: the requests of one job (or one shared job)."""

    stage: str                       # generate | cluster_agent | topic_extraction
    experiment: str | None
    model: str
    requests: int                    # requests the job sends before the cache (first attempts + retries)
    shared: int = 0                  # of those, also planned by an experiment listed before it
    cached: float | None = None      # of the unshared ones, already answered by the cache (None: not looked up)
    prompt_tokens_per_request: float = 0.0
    completion_tokens_per_request: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def after_sharing(self) -> int:
        return self.requests - self.shared

    @property
    def to_send(self) -> float:
        return self.after_sharing - (self.cached or 0.0)

    @property
    def prompt_tokens(self) -> float:
        return self.requests * self.prompt_tokens_per_request

    @property
    def completion_tokens(self) -> float:
        return self.requests * self.completion_tokens_per_request

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "after_sharing": self.after_sharing, "to_send": self.to_send,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "prompt_tokens_to_send": self.to_send * self.prompt_tokens_per_request,
                "completion_tokens_to_send": self.to_send * self.completion_tokens_per_request}


# --- shared pieces ------------------------------------------------------------------------------------------


def open_cache(config: PipelineConfig) -> RequestCache | None:
    """The request cache, read only, if the configuration's data root has one."""
    directory = Path(config.data_root) / "llm_cache"
    if not directory.is_dir():
        return None
    return RequestCache(directory, claims=False)


def local_models_dir(config: PipelineConfig) -> Path:
    return Path(artifact(config, "local_models"))


def model_identity_or_none(config: PipelineConfig, model: str) -> str | None:
    """The identity the stages would key requests with, or None when it needs a model not built yet."""
    spec = config.models[model]
    folder = local_models_dir(config)
    if spec.in_local_models:
        wanted = folder / (spec.local if spec.local is not None else f"{BUILTIN_DIR}/{spec.builtin}")
        if not wanted.is_dir():
            return None
    try:
        return spec_identity(spec, folder if spec.in_local_models else None)
    except (FileNotFoundError, OSError):
        return None


PromptCounter = Callable[[Sequence[dict[str, str]]], int]


def prompt_counter(config: PipelineConfig, model: str) -> tuple[PromptCounter, str]:
    """Counts a request's prompt tokens as the transformers backend does (chat template, no special tokens),
    with the model's tokenizer when it is on this machine; else estimates from characters."""
    spec = config.models[model]
    source: str | None = None
    if spec.in_local_models:
        folder = local_models_dir(config) / (spec.local if spec.local is not None else f"{BUILTIN_DIR}/{spec.builtin}")
        source = str(folder) if folder.is_dir() else None
    elif spec.backend != "openai" and spec.path:
        source = spec.path
    tokenizer = _load_tokenizer(source, spec.revision) if source else None
    if tokenizer is None:
        def estimate(messages: Sequence[dict[str, str]]) -> int:
            return sum(len(m["content"]) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS for m in messages)
        return estimate, f"estimated at {CHARS_PER_TOKEN} characters a token (no local tokenizer for {model!r})"

    def count(messages: Sequence[dict[str, str]]) -> int:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True,
                                                 tokenize=False)
        else:
            roles = {"system": "System", "user": "User", "assistant": "Assistant"}
            text = "".join(f"{roles[m['role']]}: {m['content']}\n" for m in messages) + "Assistant: "
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return count, f"counted with {model!r}'s tokenizer"


def _load_tokenizer(source: str, revision: str | None) -> Any | None:
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source, revision=revision if not Path(source).is_dir() else None,
                                             local_files_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means: not available here
        log.info("no local tokenizer at %s (%s): estimating from characters", source, error)
        return None


def completion_estimate(configured: float | None, measured: Sequence[LLMResponse], max_new_tokens: int,
                        fraction: float) -> tuple[float, str]:
    """Mean completion tokens per request, and where the number comes from."""
    if configured is not None:
        return configured, f"{configured:g} a request (as configured)"
    if measured:
        mean = sum(r.completion_tokens for r in measured) / len(measured)
        return mean, f"{mean:.0f} a request, measured on {len(measured)} cached answers"
    value = fraction * max_new_tokens
    return value, f"{fraction:g} x max_new_tokens {max_new_tokens} = {value:.0f} a request (plan.completion_fraction)"


def even_sample(total: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over range(total) (all of them when total <= wanted)."""
    if total <= wanted:
        return list(range(total))
    return sorted({(k * total) // wanted for k in range(wanted)})


def union_of_prefix_rectangles(rectangles: Sequence[tuple[int, int]]) -> int:
    """Cells of the union of [0, T) x [0, G) rectangles (topic rank x generation index)."""
    total, covered_rank = 0, 0
    for t in sorted({t for t, _ in rectangles}):
        width = max(g for t2, g in rectangles if t2 >= t)
        total += (t - covered_rank) * width
        covered_rank = t
    return total


# --- topics -----------------------------------------------------------------------------------------------


def planned_topics(config: PipelineConfig, experiment: str, count: int) -> tuple[Sequence[Topic], bool]:
    """The experiment's topic sample (True) when built; else stand-ins (False) read from the configured topic
    files, named by rank, for rendering prompts of the right size (their keys cannot match the cache)."""
    sample = Path(artifact(config, "sample_topics", experiment)) / "topics.parquet"
    if sample.is_file():
        import polars as pl

        frame = pl.read_parquet(sample).head(count)
        return [Topic(str(r["topic_id"]), str(r["path"]), tuple(str(k) for k in r["keywords"] or []))
                for r in frame.iter_rows(named=True)], True
    records: list[tuple[str, list[str]]] = []
    for source in config.topics.sources:
        file = builtin_topics_path() if source == "builtin" else Path(source)
        if file.is_file() and file.suffix == ".json":
            records += list(json.loads(file.read_text()).items())
        if len(records) >= min(count, 10_000):
            break
    if not records:
        records = [("General/Knowledge/topic", ["keyword"] * 4)]
    return StandInTopics(records, count), False


class StandInTopics(Sequence[Topic]):
    """``count`` stand-in topics, made when asked for (a paper-scale sample has 620K)."""

    def __init__(self, records: list[tuple[str, list[str]]], count: int) -> None:
        self.records = [(path, tuple(keywords)) for path, keywords in records]
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        if not -self.count <= index < self.count:
            raise IndexError(index)
        index %= self.count
        path, keywords = self.records[index % len(self.records)]
        return Topic(f"rank-{index}", path, keywords)


# --- generation -------------------------------------------------------------------------------------------


def _group_key(config: PipelineConfig, experiment: str) -> tuple[str, str, int | None]:
    spec = config.experiments[experiment].synthetic
    assert spec is not None
    pool = spec.topics if spec.template == "multi_topic_styles_persona" else None  # companions come from the pool
    return spec.generator, spec.template, pool


def plan_generation_requests(config: PipelineConfig, cache: RequestCache | None) -> list[RequestLine]:
    groups: dict[tuple[str, str, int | None], list[str]] = {}
    for name in config.generated_experiments():
        groups.setdefault(_group_key(config, name), []).append(name)
    lines: dict[str, RequestLine] = {}
    for (generator, template, _), names in groups.items():
        for line in _plan_group(config, cache, generator, template, names):
            lines[line.experiment or ""] = line
    return [lines[name] for name in config.generated_experiments()]


def _plan_group(config: PipelineConfig, cache: RequestCache | None, generator: str, template: str,
                names: list[str]) -> list[RequestLine]:
    generation, plan = config.generate, config.plan
    decoding = generation.decoding_for(generator)
    specs = {n: config.experiments[n].synthetic for n in names}
    rectangles = {n: (s.topics, s.generations_per_topic) for n, s in specs.items() if s is not None}
    widest = max(names, key=lambda n: rectangles[n][0])
    topics, real_topics = planned_topics(config, widest, rectangles[widest][0])
    personas = load_personas(generation.prompts.personas_path) if "persona" in template else []
    layout = prompt_layout(generation.backend_for(generator))
    identity = model_identity_or_none(config, generator)
    lookup = cache is not None and identity is not None and real_topics
    pools: dict[int, TopicPool] = {}

    def request(rank: int, g: int, pool_size: int, attempt: int = 0) -> LLMRequest:
        pool: TopicPool | tuple = ()
        if template == "multi_topic_styles_persona":  # companions come from the experiment's pool
            if pool_size not in pools:
                pools[pool_size] = TopicPool(topics[:pool_size])
            pool = pools[pool_size]
        job = plan_generation(template, topics[rank], g, prompts=generation.prompts, bounds=generation.json_schema,
                              personas=personas, global_seed=config.seed, topic_pool=pool, layout=layout)
        return generation_request(job, decoding, request_seed(config.seed, topics[rank].topic_id, g, attempt))

    counter, counted = prompt_counter(config, generator)
    lines, measured = [], []
    for index, name in enumerate(names):
        t, g = rectangles[name]
        planned = t * g
        earlier = [rectangles[n] for n in names[:index]]
        shared = planned - (union_of_prefix_rectangles([*earlier, (t, g)]) - union_of_prefix_rectangles(earlier))
        slots = [(i // g, i % g) for i in even_sample(planned, plan.sample_requests)]
        sampled = [request(r, k, t) for r, k in slots]
        prompt_mean = sum(counter(r.messages) for r in sampled) / max(len(sampled), 1)
        notes = [f"prompt tokens {counted}" + (f", mean of {len(sampled)} rendered prompts" if len(sampled) < planned
                                               else "")]
        if not real_topics:
            notes.append("topics: stand-ins from the topic files (the sample is not built yet)")
        cached: float | None = None
        retries = round(planned * plan.retry_rate)
        retry_note = f"+{retries} retries (plan.retry_rate {plan.retry_rate:g})"
        if lookup:
            found = _cached_share(cache, identity, request, name, t, g, earlier, plan.cache_lookup_limit,
                                  generation.max_attempts)
            cached = found.cached
            measured += found.answers
            if found.retries is not None:
                # retries the cache records (unusable answers it holds) are known; those of unanswered
                # requests are estimated
                retries = found.retries + round((planned - found.first_attempts_cached) * plan.retry_rate)
                retry_note = f"+{retries} retries ({found.retries} recorded in the cache)"
                shared += found.shared_retries
        else:
            notes.append("cache not looked up: " + ("no request cache yet" if cache is None else
                                                    "the generator is not built yet" if identity is None else
                                                    "the topic sample is not built yet"))
        if retries:
            notes.append(retry_note)
        lines.append(RequestLine("generate", name, generator, planned + retries, shared, cached, prompt_mean,
                                 0.0, notes))
    for line in lines:
        spec = specs[line.experiment or ""]
        stated = plan.completion_tokens.generate
        if stated is None and not measured and getattr(spec, "tokens_per_generation", None):
            stated = float(spec.tokens_per_generation)  # the experiment's own tokens a generation
        completion, how = completion_estimate(stated, measured, decoding.max_new_tokens, plan.completion_fraction)
        line.completion_tokens_per_request = completion
        line.notes.append(f"completion tokens: {how}")
    return lines


@dataclass
class CacheLookup:
    cached: float                    # unshared requests (first attempts and recorded retries) the cache answers
    answers: list[LLMResponse]       # the cached answers seen (for measured completion lengths)
    retries: int | None              # retries the cache records (None: not followed, the group was sampled)
    shared_retries: int = 0          # of those, of requests an earlier experiment shares
    first_attempts_cached: int = 0


def _cached_share(cache: RequestCache, identity: str, request: Callable[..., LLMRequest], name: str, t: int,
                  g: int, earlier: list[tuple[int, int]], limit: int, max_attempts: int) -> CacheLookup:
    """What the cache already answers of one experiment's requests, following unusable answers to the next
    attempt's request as the stage does. Exact up to ``limit`` requests; above it the hit share of an even
    sample of first attempts is extrapolated and retries are not followed."""
    unshared_count = union_of_prefix_rectangles([*earlier, (t, g)]) - union_of_prefix_rectangles(earlier)
    if t * g > limit:
        slots = [(i // g, i % g) for i in even_sample(t * g, limit)]
        keys = [request_key(identity, request(r, k, t)) for r, k in slots]
        found = cache.get_many(keys)
        share = sum(key in found for key in keys) / len(keys)
        log.info("%s: cache answers %.1f%% of %d sampled requests", name, 100 * share, len(keys))
        return CacheLookup(share * unshared_count, list(found.values()), None,
                           first_attempts_cached=round(share * t * g))
    is_shared = {(r, k): any(r < t2 and k < g2 for t2, g2 in earlier) for r in range(t) for k in range(g)}
    result = CacheLookup(0.0, [], 0)
    pending = list(is_shared)
    for attempt in range(max_attempts):
        if not pending:
            break
        keys = {slot: request_key(identity, request(*slot, t, attempt)) for slot in pending}
        found = cache.get_many(keys.values())
        hits = [slot for slot in pending if keys[slot] in found]
        result.cached += sum(not is_shared[slot] for slot in hits)
        result.answers += [found[keys[slot]] for slot in hits]
        if attempt == 0:
            result.first_attempts_cached = len(hits)
        else:
            result.retries = (result.retries or 0) + len(pending)
            result.shared_retries += sum(is_shared[slot] for slot in pending)
        pending = [slot for slot in hits if usable(found[keys[slot]]) is not None and attempt + 1 < max_attempts]
    return result


def usable(answer: LLMResponse) -> str | None:
    """Why the generate stage would retry this answer (None: it keeps it)."""
    if answer.error:
        return answer.error
    if answer.finish_reason == "length":
        return "truncated"
    if answer.parsed is None:
        return "no JSON document"
    return check_document(answer.parsed)


# --- judge and topic extraction ----------------------------------------------------------------------------


def plan_judge_requests(config: PipelineConfig) -> list[RequestLine]:
    """Cluster-agent requests per diversity job (each scored set and each scorer variant, with its own settings):
    per bootstrap seed M proposals, 2 gatherings and 1 summary (none with hand-written criteria), N clusterings
    (labels: one per distinct text) and up to N verifications."""
    lines = []
    for name in _scored(config):
        diversity = config.diversity_for(name) if hasattr(config, "diversity_for") else config.diversity
        if "cluster_agent" in diversity.metrics:
            lines.append(_judge_line(config, diversity, name))
    return lines


def _scored(config: PipelineConfig) -> list[str]:
    return config.scored_experiments() if hasattr(config, "scored_experiments") else config.synthetic_experiments()


def _judge_line(config: PipelineConfig, diversity: Any, name: str) -> RequestLine:
    agent = diversity.cluster_agent
    seeds = len(diversity.bootstrap.seeds)
    cut = agent.max_sample_chars
    overhead = PROMPT_OVERHEAD_CHARS["cluster_agent"]
    per_seed: dict[str, tuple[int, int]] = {}
    if getattr(agent, "criteria", None) is None:
        per_seed |= {"generation": (agent.M, overhead + agent.J * cut), "gathering": (2, overhead + agent.M * 400),
                     "summary": (1, overhead + 2 * agent.k * 200)}
    if agent.clustering_answer == "labels":
        per_seed["labeling"] = (min(agent.N * agent.K, diversity.bootstrap.subset_size or agent.N * agent.K),
                                overhead + cut)
    else:
        per_seed["clustering"] = (agent.N, overhead + agent.K * cut)
    if agent.verification:
        per_seed["verification"] = (agent.N, overhead + agent.K * cut + 600)
    requests = seeds * sum(n for n, _ in per_seed.values())
    prompt_chars = seeds * sum(n * chars for n, chars in per_seed.values())
    completion, how = completion_estimate(config.plan.completion_tokens.cluster_agent, [],
                                          agent.decoding.max_new_tokens, config.plan.completion_fraction)
    shape = ", ".join(f"{n} {stage}" for stage, (n, _) in per_seed.items())
    notes = [f"per bootstrap seed ({seeds}): {shape} (verification: at most one a round, an upper bound)",
             f"prompt tokens estimated from the prompt sizes at {CHARS_PER_TOKEN} characters a token",
             f"completion tokens: {how}",
             "cache and sharing between scorer variants not looked up (prompts depend on earlier answers)"]
    return RequestLine("cluster_agent", name, agent.judge, requests, 0, None,
                       prompt_chars / max(requests, 1) / CHARS_PER_TOKEN, completion, notes)


def plan_extraction_requests(config: PipelineConfig) -> list[RequestLine]:
    if not config.topics.extract_from_corpus or not config.generated_experiments():
        return []
    extraction = config.generate.topic_extraction
    prompt = (PROMPT_OVERHEAD_CHARS["topic_extraction"] + extraction.max_page_chars) / CHARS_PER_TOKEN
    completion, how = completion_estimate(config.plan.completion_tokens.topic_extraction, [],
                                          extraction.decoding.max_new_tokens, config.plan.completion_fraction)
    return [RequestLine("topic_extraction", None, extraction.model, extraction.max_pages, 0, None, prompt,
                        completion, [f"one request per real page (at most {extraction.max_pages})",
                                     f"prompt tokens estimated at {CHARS_PER_TOKEN} characters a token",
                                     f"completion tokens: {how}"])]


def plan_requests(config: PipelineConfig) -> list[RequestLine]:
    cache = open_cache(config)
    try:
        return [*plan_extraction_requests(config), *plan_generation_requests(config, cache),
                *plan_judge_requests(config)]
    finally:
        if cache is not None:
            cache.close()

