"""The LLM Cluster-agent (paper section 3.1): five stages of schema-constrained judge calls.

1. Metadata & metric generation: M rounds; each shows J random texts and asks for 3-5 metadata
   attributes (broad to specific) and 3-5 metrics with a five-level rubric.
2. Gathering: all rounds' metadata proposals are merged into k items; separately, the metrics into k.
3. Criteria summary: one sentence per metadata item and per metric; interleaved (metadata 1, metric 1,
   metadata 2, ...) they form the "clustering criteria" header of every clustering prompt.
4. Clustering: N rounds; each shows K random texts (ids S1..SK, enums of the schema) and asks for every
   cluster, singletons included, with members, uniqueness reasoning, metadata values and 1-5 scores.
5. Self-verification: for each round, the judge checks every cluster with two or more members and
   marks it valid (1) or invalid (0) with reasoning; singletons are valid without a call.

Stages 1-3 run once per bootstrap seed (on that seed's subset), stages 4-5 N times per seed. All
requests of a stage (every seed, every round) go to ``backend.generate`` together, in chunks of
``requests_per_batch``. A request that fails (invalid JSON, truncated) is retried up to
``max_attempts`` times with a new seed. Samples and request seeds depend only on (seed, stage, round,
attempt), never on N or on the other rounds: raising N replays the first rounds as cache hits.

The output is raw: one record per clustering round (see :data:`RECORD_SCHEMA`); the score D and its
conventions are computed from the records by :mod:`workflow_scripts.diversity.cluster_agent.score`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl

from workflow_scripts.config.diversity import ClusterAgentConfig
from workflow_scripts.core.hashing import hash_value
from workflow_scripts.diversity.cluster_agent import prompts, schemas
from workflow_scripts.diversity.cluster_agent.prompts import Criteria, Item
from workflow_scripts.llm.form import prompt_layout
from workflow_scripts.llm.types import LLMBackend, LLMRequest, LLMResponse

log = logging.getLogger(__name__)

STAGES = ("generation", "gathering", "summary", "clustering", "verification")
_SAMPLING_TAG = 0xC1A57E2  # separates the agent's random streams from other uses of the same seeds

CLUSTER_STRUCT = pl.Struct({
    "label": pl.String,                 # C1, C2 ... in the judge's order
    "members": pl.List(pl.Int64),       # corpus indices, raw as returned (may repeat across clusters)
    "uniqueness": pl.String,
    "metadata": pl.List(pl.String),     # one value per metadata item, criteria order
    "scores": pl.List(pl.Int64),        # 1-5 per metric, criteria order
    "checked": pl.Boolean,              # the verifier was asked about this cluster
    "valid": pl.Boolean,                # null: not judged (singleton, verification off or failed)
    "reasoning": pl.String,             # the verifier's reasoning
})
RECORD_SCHEMA = {
    "seed": pl.Int64,
    "round": pl.Int64,
    "sample_ids": pl.List(pl.Int64),    # corpus indices shown as S1..SK, in that order
    "status": pl.String,                # ok | failed
    "error": pl.String,
    "verification": pl.String,          # ok | not_needed | disabled | failed
    "clusters": pl.List(CLUSTER_STRUCT),
    "criteria": pl.String,              # the header the clustering prompt used
    "metadata_names": pl.List(pl.String),
    "metric_names": pl.List(pl.String),
    "clustering_attempts": pl.Int64,
    "verification_attempts": pl.Int64,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
}


class CriteriaError(RuntimeError):
    """Stages 1-3 produced no usable criteria for a seed."""


def handwritten_criteria(config: ClusterAgentConfig, plans: Sequence[SeedPlan]
                         ) -> tuple[dict[int, Criteria], dict[int, dict[str, Any]]]:
    """The configured criteria for every seed (stages 1-3 skipped: no requests)."""
    written = config.criteria
    metadata = tuple(Item(i.name, i.description) for i in written.metadata)
    metrics = tuple(Item(i.name, i.description, tuple(i.rubric)) for i in written.metrics)
    sentences = tuple((m.description, x.description) for m, x in zip(written.metadata, written.metrics))
    criteria = Criteria(metadata, metrics, sentences)
    return ({plan.seed: criteria for plan in plans},
            {plan.seed: {"handwritten": True, **criteria.to_json()} for plan in plans})


def sample_labels(k: int) -> list[str]:
    return [f"S{i}" for i in range(1, k + 1)]


def request_seed(*parts: Any) -> int:
    return int(hash_value(["cluster_agent", *parts])[:8], 16) & 0x7FFFFFFF


def draw(seed: int, stage: int, round_: int, pool: np.ndarray, size: int) -> np.ndarray:
    """``size`` distinct members of ``pool`` for one round; depends on nothing but its arguments."""
    if size > len(pool):
        raise ValueError(f"cannot draw {size} distinct samples from a pool of {len(pool)}")
    rng = np.random.default_rng([_SAMPLING_TAG, seed % (1 << 32), stage, round_])
    return np.asarray(pool)[rng.choice(len(pool), size=size, replace=False)].astype(np.int64)


@dataclass
class SeedPlan:
    seed: int
    generation_samples: list[np.ndarray]   # M arrays of J corpus indices
    clustering_samples: list[np.ndarray]   # N arrays of K corpus indices


@dataclass
class StageUsage:
    requests: int = 0          # distinct jobs
    calls: int = 0             # requests sent, retries included
    failures: int = 0          # jobs without a usable answer after every attempt
    first_attempt_ok: int = 0  # jobs answered usably at the first attempt
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Job:
    key: tuple[Any, ...]
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    check: Callable[[Any], None] | None = None   # raises ValueError for a schema-valid but unusable answer


@dataclass
class JobResult:
    value: Any | None
    error: str | None
    attempts: int
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class AgentRun:
    records: pl.DataFrame
    criteria: dict[int, dict[str, Any]]
    usage: dict[str, StageUsage] = field(default_factory=dict)

    def usage_dict(self) -> dict[str, dict[str, int]]:
        return {stage: usage.to_dict() for stage, usage in self.usage.items()}


def plan_seed(seed: int, pool: np.ndarray, config: ClusterAgentConfig) -> SeedPlan:
    return SeedPlan(
        seed=seed,
        generation_samples=[draw(seed, 1, m, pool, min(config.J, len(pool))) for m in range(config.M)],
        clustering_samples=[draw(seed, 4, r, pool, config.K) for r in range(config.N)],
    )


def needed_indices(plans: Sequence[SeedPlan]) -> np.ndarray:
    parts = [a for plan in plans for a in (*plan.generation_samples, *plan.clustering_samples)]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


class ClusterAgent:
    def __init__(self, backend: LLMBackend, config: ClusterAgentConfig, progress: bool = True) -> None:
        self.backend = backend
        self.config = config
        self.progress = progress
        self.usage = {stage: StageUsage() for stage in STAGES}
        self.layout = prompt_layout(config.backend)

    # --- calling the judge --------------------------------------------------------------------------------

    def _run_jobs(self, stage: str, jobs: Sequence[Job]) -> list[JobResult]:
        """Every job of a stage, batched; failed jobs are retried with a new seed."""
        from tqdm import tqdm

        config, decoding = self.config, self.config.decoding
        usage = self.usage[stage]
        usage.requests += len(jobs)
        results = [JobResult(None, "not attempted", 0) for _ in jobs]
        pending = list(range(len(jobs)))
        for attempt in range(config.max_attempts):
            if not pending:
                break
            temperature = decoding.temperature if attempt == 0 else decoding.retry_temperature
            requests = [LLMRequest(messages=jobs[i].messages, temperature=temperature, top_p=decoding.top_p,
                                   max_new_tokens=decoding.max_new_tokens, json_schema=jobs[i].schema,
                                   seed=request_seed(stage, *jobs[i].key, attempt),
                                   repetition_penalty=decoding.repetition_penalty) for i in pending]
            responses: list[LLMResponse] = []
            per_call = len(requests) if config.backend.mode == "batch" else config.requests_per_batch  # one job
            chunks = range(0, len(requests), per_call)
            for start in tqdm(chunks, desc=f"cluster-agent {stage}" + (f" (retry {attempt})" if attempt else ""),
                              unit="batch", disable=not self.progress or len(chunks) < 2, leave=False):
                batch = requests[start:start + per_call]
                answers = self.backend.generate(batch)
                if len(answers) != len(batch):
                    raise RuntimeError(f"judge returned {len(answers)} answers for {len(batch)} requests")
                responses.extend(answers)
            still = []
            for i, response in zip(pending, responses):
                result = results[i]
                result.attempts = attempt + 1
                result.prompt_tokens += response.prompt_tokens
                result.completion_tokens += response.completion_tokens
                usage.calls += 1
                usage.prompt_tokens += response.prompt_tokens
                usage.cached_prompt_tokens += min(response.cached_prompt_tokens, response.prompt_tokens)
                usage.completion_tokens += response.completion_tokens
                error = _usable(response)
                if error is None and jobs[i].check is not None:
                    try:
                        jobs[i].check(response.parsed)
                    except (ValueError, KeyError, TypeError) as problem:
                        error = f"unusable answer: {problem}"
                if error is None:
                    result.value, result.error = response.parsed, None
                else:
                    result.error = error
                    still.append(i)
            if attempt == 0:
                usage.first_attempt_ok += len(pending) - len(still)
            pending = still
        usage.failures += len(pending)
        if pending:
            log.warning("%s: %d of %d requests gave no usable answer after %d attempts (first error: %s)",
                        stage, len(pending), len(jobs), config.max_attempts, results[pending[0]].error)
        return results

    # --- stages 1-3 -----------------------------------------------------------------------------------------

    def build_criteria(self, plans: Sequence[SeedPlan], texts: Mapping[int, str]
                       ) -> tuple[dict[int, Criteria], dict[int, dict[str, Any]]]:
        config = self.config
        if config.criteria is not None:
            return handwritten_criteria(config, plans)
        cut = config.max_sample_chars
        generation_schema = schemas.generation_schema(config.min_items, config.max_items, config.strings)
        jobs = [Job((plan.seed, m), prompts.generation_prompt([texts[int(i)][:cut] for i in sample],
                                                              config.min_items, config.max_items, self.layout),
                    generation_schema)
                for plan in plans for m, sample in enumerate(plan.generation_samples)]
        answers = self._run_jobs("generation", jobs)
        proposals: dict[int, dict[str, list[Item]]] = {p.seed: {"metadata": [], "metrics": []} for p in plans}
        raw_rounds: dict[int, list[Any]] = {p.seed: [] for p in plans}
        for job, answer in zip(jobs, answers):
            seed = job.key[0]
            raw_rounds[seed].append(answer.value)
            if answer.value is not None:
                for kind in ("metadata", "metrics"):
                    proposals[seed][kind].extend(Item.from_json(v) for v in answer.value[kind])

        jobs = []
        for plan in plans:
            for kind in ("metadata", "metrics"):
                items = _distinct(proposals[plan.seed][kind])
                if not items:
                    raise CriteriaError(f"seed {plan.seed}: no usable {kind} proposals after {config.M} rounds "
                                        "of stage 1 (see the warnings above)")
                jobs.append(Job((plan.seed, kind), prompts.gathering_prompt(kind, items, config.k, self.layout),
                                schemas.gathering_schema(kind, config.k, config.strings)))
        answers = self._run_jobs("gathering", jobs)
        gathered: dict[int, dict[str, tuple[Item, ...]]] = {p.seed: {} for p in plans}
        for job, answer in zip(jobs, answers):
            seed, kind = job.key
            if answer.value is None:
                raise CriteriaError(f"seed {seed}: the gathering of {kind} failed ({answer.error})")
            gathered[seed][kind] = tuple(Item.from_json(v) for v in answer.value["items"])

        jobs = [Job((plan.seed,), prompts.summary_prompt(gathered[plan.seed]["metadata"],
                                                         gathered[plan.seed]["metrics"], self.layout),
                    schemas.summary_schema(config.k, config.strings)) for plan in plans]
        answers = self._run_jobs("summary", jobs)
        criteria: dict[int, Criteria] = {}
        logs: dict[int, dict[str, Any]] = {}
        for plan, answer in zip(plans, answers):
            if answer.value is None:
                raise CriteriaError(f"seed {plan.seed}: the criteria summary failed ({answer.error})")
            sentences = tuple((p["metadata"].strip(), p["metric"].strip()) for p in answer.value["sentences"])
            criteria[plan.seed] = Criteria(gathered[plan.seed]["metadata"], gathered[plan.seed]["metrics"],
                                           sentences)
            logs[plan.seed] = {
                "generation_rounds": raw_rounds[plan.seed],
                "generation_failures": sum(v is None for v in raw_rounds[plan.seed]),
                **criteria[plan.seed].to_json(),
            }
        return criteria, logs

    # --- stages 4-5 -----------------------------------------------------------------------------------------

    def cluster(self, plans: Sequence[SeedPlan], texts: Mapping[int, str],
                criteria: Mapping[int, Criteria]) -> pl.DataFrame:
        config = self.config
        cut = config.max_sample_chars
        labels = sample_labels(config.K)
        keys = [(plan.seed, r) for plan in plans for r in range(len(plan.clustering_samples))]
        shown = [[texts[int(i)][:cut] for i in sample] for plan in plans for sample in plan.clustering_samples]
        if config.clustering_answer == "labels":
            clustering = self._label_rounds(plans, texts, labels)
        else:
            schemas_by_seed = {seed: schemas.clustering_schema(labels, len(c.metadata), len(c.metrics), config.strings)
                               for seed, c in criteria.items()}
            clustering = self._run_jobs("clustering", [
                Job(key, prompts.clustering_prompt(criteria[key[0]], labels, sample_texts, self.layout),
                    schemas_by_seed[key[0]]) for key, sample_texts in zip(keys, shown)])

        verify_jobs, verify_rounds = [], []
        if config.verification:
            for index, (key, answer) in enumerate(zip(keys, clustering)):
                if answer.value is None:
                    continue
                clusters = answer.value["clusters"]
                to_check = [f"C{c}" for c, cl in enumerate(clusters, 1) if len(set(cl["members"])) > 1]
                if not to_check:
                    continue
                seed = key[0]
                listing = [(f"C{c}", cl["members"], cl["uniqueness"]) for c, cl in enumerate(clusters, 1)]
                verify_jobs.append(Job(key, prompts.verification_prompt(
                    criteria[seed], labels, shown[index], listing, to_check, self.layout),
                    schemas.verification_schema(to_check, config.strings)))
                verify_rounds.append(index)
        verification = dict(zip(verify_rounds, self._run_jobs("verification", verify_jobs)))

        rows = []
        for index, ((seed, round_), answer) in enumerate(zip(keys, clustering)):
            plan = next(p for p in plans if p.seed == seed)
            rows.append(_record(seed, round_, plan.clustering_samples[round_], labels, answer,
                                verification.get(index), config.verification, criteria[seed]))
        return pl.DataFrame(rows, schema=RECORD_SCHEMA)

    def _label_rounds(self, plans: Sequence[SeedPlan], texts: Mapping[int, str], labels: Sequence[str]
                      ) -> list[JobResult]:
        """Stage 4 as labels: one request per distinct text (its label does not depend on the round, so a
        text drawn in many rounds or seeds is asked once), then each round's clusters from its labels."""
        cut = self.config.max_sample_chars
        schema = schemas.labeling_schema(self.config.strings)
        distinct = sorted({int(i) for plan in plans for sample in plan.clustering_samples for i in sample})
        jobs = [Job(("label", hash_value(texts[i][:cut])[:16]), prompts.labeling_prompt(texts[i][:cut], self.layout),
                    schema) for i in distinct]
        answers = dict(zip(distinct, self._run_jobs("clustering", jobs)))
        rounds, charged = [], set()
        for plan in plans:
            for sample in plan.clustering_samples:
                results = [answers[int(i)] for i in sample]
                new = [int(i) for i in sample if int(i) not in charged]
                charged.update(new)
                tokens = (sum(answers[i].prompt_tokens for i in new), sum(answers[i].completion_tokens for i in new))
                failed = next((r for r in results if r.value is None), None)
                if failed is not None:
                    rounds.append(JobResult(None, f"a sample got no label: {failed.error}",
                                            max(r.attempts for r in results), *tokens))
                    continue
                value = clusters_from_labels({label: r.value["label"] for label, r in zip(labels, results)}, labels)
                rounds.append(JobResult(value, None, max(r.attempts for r in results), *tokens))
        return rounds

    def run(self, plans: Sequence[SeedPlan], texts: Mapping[int, str]) -> AgentRun:
        criteria, logs = self.build_criteria(plans, texts)
        records = self.cluster(plans, texts, criteria)
        return AgentRun(records=records, criteria=logs, usage=self.usage)


# --- helpers --------------------------------------------------------------------------------------------


def normalise_label(text: str) -> str:
    """Labels that differ only in case, punctuation or spacing name the same cluster."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def clusters_from_labels(value: Mapping[str, str], labels: Sequence[str]) -> dict[str, Any]:
    """A ``labels`` answer as the ``clusters`` answer it implies: samples sharing a label, in first-seen order;
    the label is the cluster's stated reason, and there are no metadata values or scores."""
    groups: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for label in labels:
        key = normalise_label(str(value[label])) or label  # an empty label makes its sample a singleton
        groups.setdefault(key, []).append(label)
        names.setdefault(key, str(value[label]).strip())
    return {"clusters": [{"members": members, "uniqueness": names[key], "metadata": [], "scores": []}
                         for key, members in groups.items()]}


def _usable(response: LLMResponse) -> str | None:
    if response.error:
        return response.error
    if response.finish_reason != "stop":
        return f"finish reason {response.finish_reason}"
    if response.parsed is None:
        return "no parsed JSON"
    return None


def _distinct(items: Sequence[Item]) -> list[Item]:
    seen, out = set(), []
    for item in items:
        key = (item.name.lower(), item.description.lower())
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _record(seed: int, round_: int, sample: np.ndarray, labels: Sequence[str], answer: JobResult,
            verdicts: JobResult | None, verification_on: bool, criteria: Criteria) -> dict[str, Any]:
    index_of = {label: int(i) for label, i in zip(labels, sample)}
    base = {
        "seed": seed, "round": round_, "sample_ids": [int(i) for i in sample],
        "criteria": criteria.header(),
        "metadata_names": [i.name for i in criteria.metadata], "metric_names": [i.name for i in criteria.metrics],
        "clustering_attempts": answer.attempts,
        "verification_attempts": verdicts.attempts if verdicts else 0,
        "prompt_tokens": answer.prompt_tokens + (verdicts.prompt_tokens if verdicts else 0),
        "completion_tokens": answer.completion_tokens + (verdicts.completion_tokens if verdicts else 0),
    }
    if answer.value is None:
        return {**base, "status": "failed", "error": f"clustering: {answer.error}", "verification": "not_needed",
                "clusters": []}
    if not verification_on:
        verification = "disabled"
    elif verdicts is None:
        verification = "not_needed"
    else:
        verification = "ok" if verdicts.value is not None else "failed"
    clusters = []
    for c, cluster in enumerate(answer.value["clusters"], 1):
        label = f"C{c}"
        verdict = verdicts.value.get(label) if verdicts is not None and verdicts.value is not None else None
        checked = verdicts is not None and len(set(cluster["members"])) > 1
        clusters.append({
            "label": label,
            "members": [index_of[m] for m in cluster["members"]],
            "uniqueness": cluster["uniqueness"],
            "metadata": [str(v) for v in cluster["metadata"]],
            "scores": [int(s) for s in cluster["scores"]],
            "checked": checked,
            "valid": None if verdict is None else bool(verdict["valid"]),
            "reasoning": None if verdict is None else verdict["reasoning"],
        })
    failed = verification == "failed"
    return {**base, "status": "failed" if failed else "ok",
            "error": f"verification: {verdicts.error}" if failed and verdicts else None,
            "verification": verification, "clusters": clusters}
