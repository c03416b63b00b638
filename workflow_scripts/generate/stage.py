"""Stage: synthetic generations for one experiment (T topics x G generations through one LLM).

Inputs: a topic sample (``topics.parquet``: topic_id, path, keywords), the local_models artifact when the
generator is a local model, and the shared request cache. Every request has one deterministic seed
derived from (global seed, topic id, generation index, attempt) and goes through the content-addressed
cache, so G=20 reuses the G=10 requests, a rerun after a downstream-only change makes no LLM call, and
a killed run resumes where it stopped. Invalid or truncated documents are retried (new seed) up to
``generate.max_attempts`` and then recorded, with the reason, in ``failures.parquet``.

Output: ``generations-NNNNN.parquet`` shards (one row per generation: ids, topic, template, style,
persona, model, seed, raw JSON, rendered text, token counts, finish reason), ``failures.parquet`` and
the manifest (requests, cache hits, backend calls, failures; prompt, cached-prompt and completion tokens and
dollars of every answer used, at the generator's ``models.NAME.price``). What this run paid goes into the run
sidecar. ``generate.budget_usd`` stops the stage before a batch that could exceed it (see
:mod:`workflow_scripts.llm.cost`); a rerun with a larger budget resumes from the cache.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from workflow_scripts.config import ConfigError, PipelineConfig, parse_config
from workflow_scripts.config.generate import Decoding, GenerationConfig, SchemaBounds
from workflow_scripts.core.artifacts import InputError, build_artifact, read_manifest
from workflow_scripts.core.cli import load_checked_config, run_main, stage_parser
from workflow_scripts.core.hashing import canonical_json, hash_value
from workflow_scripts.core.identity import job_identity
from workflow_scripts.generate.render import check_document, render_document, render_seed
from workflow_scripts.generate.templates import (
    GenerationPlan,
    Topic,
    TopicPool,
    chosen_persona,
    load_personas,
    plan_generation,
)
from workflow_scripts.llm.cache import CachedBackend, RequestCache, request_key
from workflow_scripts.llm.cost import Budget, BudgetedBackend, Usage, backend_mode, price_info, usage_counts
from workflow_scripts.llm.loader import LazyBackend, batch_state_dir
from workflow_scripts.llm.form import prompt_layout
from workflow_scripts.llm.types import LLMBackend, LLMRequest, LLMResponse

log = logging.getLogger(__name__)

STAGE = "generate"
TOPICS_FILE = "topics.parquet"
FAILURES_FILE = "failures.parquet"
SHARD_PATTERN = "generations-{:05d}.parquet"

GENERATION_SCHEMA = {
    "generation_id": pl.String, "experiment": pl.String, "topic_id": pl.String, "topic": pl.String,
    "keywords": pl.List(pl.String), "companion_topic_ids": pl.List(pl.String), "template": pl.String,
    "style": pl.String, "persona": pl.String, "personas": pl.List(pl.String), "model": pl.String,
    "model_identity": pl.String, "generation_index": pl.Int64, "attempt": pl.Int64, "seed": pl.Int64,
    "request_key": pl.String, "raw_json": pl.String, "text": pl.String, "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64, "finish_reason": pl.String,
}
FAILURE_SCHEMA = {
    "generation_id": pl.String, "experiment": pl.String, "topic_id": pl.String, "generation_index": pl.Int64,
    "template": pl.String, "style": pl.String, "model": pl.String, "attempts": pl.Int64, "seed": pl.Int64,
    "request_key": pl.String, "finish_reason": pl.String, "reason": pl.String, "reasons": pl.List(pl.String),
    "raw_text": pl.String,
}


class GenerationError(RuntimeError):
    """Requests failed for transient reasons (endpoint down ...); answered ones are cached: rerun."""


# --- configuration ----------------------------------------------------------------------------------------


def split_config(raw: Any, source: str = "<config>") -> tuple[PipelineConfig, GenerationConfig]:
    """Validate a raw config dict; return it with its ``generate`` section."""
    config = parse_config(raw, source)
    return config, config.generate






def max_document_chars(bounds: SchemaBounds, n_personas: int) -> int:
    """Longest document the bounded schema allows (one token can be one character)."""
    passage = bounds.max_nuance_chars + bounds.max_passage_chars + 28
    total = 120 + bounds.max_passages * passage + bounds.max_question_chars + 4 * (bounds.max_option_chars + 3)
    return total + bounds.max_explanation_chars + (16 if n_personas else 0)


# --- inputs -----------------------------------------------------------------------------------------------


def read_topics(topics_dir: Path, wanted: int) -> list[Topic]:
    read_manifest(topics_dir)
    file = topics_dir / TOPICS_FILE
    if not file.is_file():
        raise InputError(f"{topics_dir} has no {TOPICS_FILE}")
    frame = pl.read_parquet(file)
    missing = {"topic_id", "path", "keywords"} - set(frame.columns)
    if missing:
        raise InputError(f"{file}: missing columns {sorted(missing)} (has {frame.columns})")
    if not isinstance(frame.schema["keywords"], pl.List):
        raise InputError(f"{file}: column 'keywords' must be a list of strings, got {frame.schema['keywords']}")
    if frame.height < wanted:
        raise InputError(f"{file}: the experiment needs {wanted} topics but the sample has {frame.height}")
    frame = frame.head(wanted)  # a random sample's prefix is a random sample: one sample can serve smaller T
    topics: list[Topic] = []
    seen: set[str] = set()
    for row, record in enumerate(frame.select("topic_id", "path", "keywords").iter_rows(named=True)):
        topic_id = str(record["topic_id"])
        if not record["path"] or not str(record["path"]).strip():
            raise InputError(f"{file}: row {row} (topic_id {topic_id}) has an empty path")
        if topic_id in seen:
            raise InputError(f"{file}: row {row}: duplicate topic_id {topic_id}")
        seen.add(topic_id)
        keywords = tuple(str(k) for k in (record["keywords"] or []) if k is not None and str(k).strip())
        topics.append(Topic(topic_id=topic_id, path=str(record["path"]), keywords=keywords))
    return topics


def request_seed(global_seed: int, topic_id: str, generation_index: int, attempt: int) -> int:
    """Experiment-independent: the same (topic, generation, attempt) gets the same seed everywhere."""
    return int(hash_value([global_seed, "generate", topic_id, generation_index, attempt])[:15], 16)


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class _Job:
    generation_id: str
    plan: GenerationPlan
    attempt: int = 0
    reasons: list[str] = field(default_factory=list)
    last_text: str = ""
    last_finish: str = ""
    last_seed: int = 0
    last_key: str = ""


class RowSink:
    """Receives finished rows in order; this default keeps them in memory (the stage writes shards)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def close(self) -> int:
        return len(self.rows)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=GENERATION_SCHEMA)


class ShardWriter(RowSink):
    """Writes ``generations-NNNNN.parquet`` every ``rows_per_shard`` rows, so memory stays bounded."""

    def __init__(self, out_dir: Path, rows_per_shard: int) -> None:
        super().__init__()
        self.out_dir, self.rows_per_shard = out_dir, rows_per_shard
        self.shards: list[str] = []
        self.written = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        while len(self.rows) >= self.rows_per_shard:
            self._flush(self.rows[:self.rows_per_shard])
            self.rows = self.rows[self.rows_per_shard:]

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        name = SHARD_PATTERN.format(len(self.shards))
        pl.DataFrame(rows, schema=GENERATION_SCHEMA).write_parquet(self.out_dir / name)
        self.shards.append(name)
        self.written += len(rows)

    def close(self) -> int:
        if self.rows or not self.shards:  # always at least one (possibly empty) shard
            self._flush(self.rows)
            self.rows = []
        return self.written


@dataclass
class GenerationResult:
    generations: pl.DataFrame | None  # None when rows went to a ShardWriter
    failures: pl.DataFrame
    counts: dict[str, float | int]
    run: dict[str, Any] = field(default_factory=dict)  # facts of this run only (what it paid)


@dataclass
class _Tally:
    usage: Usage = field(default_factory=Usage)  # every answer used, cache hits and retries included
    prefetched_hits: int = 0
    kept_completion_tokens: int = 0
    generations: int = 0
    first_attempt_valid: int = 0


def generate_experiment(
    config: PipelineConfig,
    generation: GenerationConfig,
    experiment: str,
    topics: Sequence[Topic],
    backend: LLMBackend,
    cache: RequestCache,
    *,
    sink: RowSink | None = None,
    progress: bool = True,
) -> GenerationResult:
    """All T x G generations of one experiment, streamed in chunks of ``generate.plan_chunk_size``.

    Raises GenerationError when requests failed for transient reasons (after caching every answer).
    """
    spec = config.experiments[experiment].synthetic
    if spec is None:
        raise ConfigError(f"experiment {experiment!r} has no 'synthetic' section: nothing to generate")
    decoding = generation.decoding_for(spec.generator)
    personas: list[str] = []
    if spec.template in ("topic_styles_persona", "multi_topic_styles_persona"):
        personas = load_personas(generation.prompts.personas_path)
    bounds = generation.json_schema
    layout = prompt_layout(generation.backend_for(spec.generator))
    if generation.backend_for(spec.generator).mode == "batch":  # a chunk's misses go out as one Batch API job
        generation = generation.model_copy(update={"requests_per_batch": generation.plan_chunk_size})
    if bounds.string_mode == "pattern":
        longest = max_document_chars(bounds, generation.prompts.personas_per_prompt if personas else 0)
        if decoding.max_new_tokens < longest:
            log.warning("max_new_tokens=%d is below the longest schema-valid document (%d characters): a model "
                        "that writes one character per token may be truncated", decoding.max_new_tokens, longest)
    in_memory = sink is None
    sink = sink if sink is not None else RowSink()
    pool = TopicPool(topics)
    price = config.models[spec.generator].price
    mode = backend_mode(generation.backend_for(spec.generator))
    budget = Budget(generation.budget_usd, price, mode, "generate.budget_usd", where=f"generate {experiment}")
    cached = BudgetedBackend(CachedBackend(backend, cache), budget)
    tally = _Tally()
    failures: list[_Job] = []
    transient: list[str] = []
    planned = len(topics) * spec.generations_per_topic
    started = time.perf_counter()
    bar = _progress(planned, progress, f"generate {experiment}")
    pairs = ((topic, g) for topic in topics for g in range(spec.generations_per_topic))
    while chunk := list(itertools.islice(pairs, generation.plan_chunk_size)):
        jobs = [_Job(f"{topic.topic_id}:{g}", plan_generation(
            spec.template, topic, g, prompts=generation.prompts, bounds=bounds, personas=personas,
            global_seed=config.seed, topic_pool=pool, layout=layout)) for topic, g in chunk]
        successes = _run_attempts(jobs, config.seed, generation, decoding, cached, tally, failures, transient, bar)
        if transient:
            continue  # keep asking (and caching) the rest; nothing is published at the end
        rows = []
        for job in jobs:
            if job.generation_id in successes:
                rows.append(_row(job, successes[job.generation_id], experiment, spec.generator,
                                 cached.identity(), config.seed, generation))
        tally.generations += len(rows)
        tally.kept_completion_tokens += sum(r["completion_tokens"] for r in rows)
        sink.add(rows)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started
    if transient:
        examples = "; ".join(sorted(set(transient))[:3])
        raise GenerationError(
            f"{len(transient)} requests failed for transient reasons ({examples}); every answered request is "
            "cached: rerun the stage to resume")
    sink.close()
    failure_frame = pl.DataFrame([_failure_row(job, experiment, spec.generator) for job in sorted(
        failures, key=lambda j: (j.plan.topic.topic_id, j.plan.generation_index))], schema=FAILURE_SCHEMA)
    hits = tally.prefetched_hits + cached.hits
    backend_seconds = cached.backend_seconds
    counts: dict[str, float | int] = {
        "topics": len(topics),
        "generations_per_topic": spec.generations_per_topic,
        # a unique-token target: G was derived from it (SyntheticSpec), the kept completion tokens show the reach
        **({"unique_tokens_target": spec.unique_tokens} if spec.unique_tokens is not None else {}),
        "generations_planned": planned,
        "generations": tally.generations,
        "failures": failure_frame.height,
        "requests": tally.usage.requests,
        "retries": tally.usage.requests - planned,
        # schema-valid, usable documents: on the first request, and within generate.max_attempts
        "valid_first_attempt_rate": round(tally.first_attempt_valid / planned, 4) if planned else 0,
        "valid_within_attempts_rate": round(tally.generations / planned, 4) if planned else 0,
        # every answer the stage used (all attempts, cache hits included), as if all were paid
        **usage_counts(tally.usage, price, mode),
        "completion_tokens_kept": tally.kept_completion_tokens,
    }
    timings = {  # of this run only (they depend on what the cache held): the run sidecar, not the manifest
        "cache_hits": hits,
        "backend_requests": cached.backend_requests,
        "backend_prompt_tokens": cached.backend_prompt_tokens,
        "backend_completion_tokens": cached.backend_completion_tokens,
        "backend_seconds": round(backend_seconds, 3),
        "generation_seconds": round(elapsed, 3),
        "backend_requests_per_s": round(cached.backend_requests / backend_seconds, 3) if backend_seconds else 0,
        "backend_output_tokens_per_s":
            round(cached.backend_completion_tokens / backend_seconds, 3) if backend_seconds else 0,
    }
    log.info("%s: %d generations, %d failures, %d requests (%d cache hits, %d backend calls)", experiment,
             tally.generations, failure_frame.height, tally.usage.requests, hits, cached.backend_requests)
    paid = usage_counts(budget.paid, price, mode, prefix="paid_")
    log.info("%s: answers cost $%.4f at list price (%.1f%% of prompt tokens from the provider's prompt cache); "
             "this run paid $%.4f", experiment, counts["cost_usd"], 100 * counts["cached_prompt_share"],
             paid["paid_cost_usd"])
    return GenerationResult(sink.frame() if in_memory else None, failure_frame, counts,
                            run={**paid, "paid_requests": budget.paid.requests, **timings})


def generation_request(plan: GenerationPlan, decoding: Decoding, seed: int) -> LLMRequest:
    """The request the stage sends for a planned generation (the plan command builds the same keys)."""
    return LLMRequest(messages=plan.messages, temperature=decoding.temperature, top_p=decoding.top_p,
                      max_new_tokens=decoding.max_new_tokens, json_schema=plan.json_schema, seed=seed,
                      repetition_penalty=decoding.repetition_penalty)


def _run_attempts(jobs: list[_Job], global_seed: int, generation: GenerationConfig, decoding: Decoding,
                  cached: BudgetedBackend, tally: _Tally, failures: list[_Job], transient: list[str],
                  bar: Any) -> dict[str, LLMResponse]:
    """Ask for every job, retrying unusable answers with a new seed; returns the usable answers. Each batch
    of misses is checked against the budget before it is sent (:class:`~workflow_scripts.llm.cost.Budget`)."""
    identity = cached.identity()
    successes: dict[str, LLMResponse] = {}
    pending = jobs
    for attempt in range(generation.max_attempts):
        if not pending:
            break
        requests = []
        for job in pending:
            job.attempt = attempt
            job.last_seed = request_seed(global_seed, job.plan.topic.topic_id, job.plan.generation_index, attempt)
            requests.append(generation_request(job.plan, decoding, job.last_seed))
            job.last_key = request_key(identity, requests[-1])
        answers = cached.cache.get_many(job.last_key for job in pending)
        tally.prefetched_hits += len(answers)
        cached.budget.charge(answers.values())
        misses = [(job, request) for job, request in zip(pending, requests) if job.last_key not in answers]
        if bar is not None:
            if attempt > 0:
                bar.total += len(pending)
            bar.update(len(pending) - len(misses))
        for start in range(0, len(misses), generation.requests_per_batch):
            batch = misses[start:start + generation.requests_per_batch]
            for (job, _), answer in zip(batch, cached.generate([request for _, request in batch])):
                answers[job.last_key] = answer
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(hits=tally.prefetched_hits + cached.hits, calls=cached.backend_requests,
                                refresh=False)
        still_pending = []
        for job in pending:
            answer = answers[job.last_key]
            tally.usage.add([answer])
            job.last_text, job.last_finish = answer.text, answer.finish_reason
            if answer.transient:
                transient.append(answer.error or "transient error")
                continue
            reason = answer.error
            if reason is None and answer.finish_reason == "length":
                reason = "truncated (finish_reason=length)"
            if reason is None and answer.parsed is None:
                reason = "no JSON document in the answer"
            if reason is None:
                reason = check_document(answer.parsed)
            if reason is None:
                successes[job.generation_id] = answer
                tally.first_attempt_valid += attempt == 0
                continue
            job.reasons.append(f"attempt {attempt}: {reason}")
            if attempt + 1 < generation.max_attempts:
                still_pending.append(job)
            else:
                failures.append(job)
        pending = still_pending
    return successes


def _row(job: _Job, answer: LLMResponse, experiment: str, model: str, identity: str, global_seed: int,
         generation: GenerationConfig) -> dict[str, Any]:
    plan = job.plan
    return {
        "generation_id": job.generation_id, "experiment": experiment, "topic_id": plan.topic.topic_id,
        "topic": plan.topic.path, "keywords": list(plan.topic.keywords),
        "companion_topic_ids": [t.topic_id for t in plan.companions], "template": plan.template,
        "style": plan.style, "persona": chosen_persona(plan, answer.parsed), "personas": list(plan.personas),
        "model": model, "model_identity": identity, "generation_index": plan.generation_index,
        "attempt": job.attempt, "seed": job.last_seed, "request_key": job.last_key,
        "raw_json": canonical_json(answer.parsed),
        "text": render_document(answer.parsed, generation.render, render_seed(global_seed, job.generation_id)),
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
        "finish_reason": answer.finish_reason,
    }


def _failure_row(job: _Job, experiment: str, model: str) -> dict[str, Any]:
    return {
        "generation_id": job.generation_id, "experiment": experiment, "topic_id": job.plan.topic.topic_id,
        "generation_index": job.plan.generation_index, "template": job.plan.template, "style": job.plan.style,
        "model": model, "attempts": job.attempt + 1, "seed": job.last_seed, "request_key": job.last_key,
        "finish_reason": job.last_finish, "reason": job.reasons[-1] if job.reasons else "",
        "reasons": job.reasons, "raw_text": job.last_text[:4000],
    }


def _progress(total: int, enabled: bool, description: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="req", mininterval=1.0)


def run_stage(
    config: PipelineConfig,
    generation: GenerationConfig,
    *,
    experiment: str,
    topics_dir: Path,
    cache_dir: Path,
    out: Path,
    models_dir: Path | None = None,
    backend: LLMBackend | None = None,
    progress: bool = True,
) -> Path:
    """Generate one experiment into the artifact ``out`` (``backend`` overrides the registry, for tests)."""
    if experiment not in config.experiments:
        raise ConfigError(f"experiment {experiment!r} is not in the grid (known: {sorted(config.experiments)})")
    spec = config.experiments[experiment].synthetic
    if spec is None:
        raise ConfigError(f"experiment {experiment!r} has no 'synthetic' section: nothing to generate")
    model_spec = config.models[spec.generator]
    inputs: dict[str, Path] = {"topics": topics_dir}
    if model_spec.in_local_models and models_dir is not None:
        read_manifest(models_dir, stage="local_models")
        inputs["models"] = models_dir
    topics = read_topics(topics_dir, spec.topics)
    if backend is None:
        backend = LazyBackend(model_spec, models_dir, generation.backend_for(spec.generator),
                              state_dir=batch_state_dir(cache_dir))
    identity = job_identity(config, STAGE, experiment, inputs)
    with RequestCache(cache_dir) as cache, build_artifact(out, identity=identity, inputs=inputs) as artifact:
        writer = ShardWriter(artifact.path, generation.rows_per_shard)
        result = generate_experiment(config, generation, experiment, topics, backend, cache, sink=writer,
                                     progress=progress)
        shards = writer.shards
        result.failures.write_parquet(artifact.path / FAILURES_FILE)
        artifact.counts.update(result.counts)
        artifact.run.update(result.run)
        artifact.info.update({
            **price_info(model_spec.price, backend_mode(generation.backend_for(spec.generator))),
            "template": spec.template, "generator": spec.generator, "model_identity": backend.identity(),
            "shards": shards, "failures_file": FAILURES_FILE, "columns": list(GENERATION_SCHEMA),
        })
        artifact.run["backend_loaded"] = getattr(backend, "loaded", True)
    return out


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    generation = config.generate
    run_stage(config, generation, experiment=args.experiment, topics_dir=args.topics, cache_dir=args.cache,
              out=args.out, models_dir=args.models, progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__, experiment=True)
    parser.add_argument("--topics", type=Path, required=True,
                        help="topic-sample artifact (topics.parquet: topic_id, path, keywords)")
    parser.add_argument("--models", type=Path, default=None,
                        help="local_models artifact; needed when the generator is a 'local' model")
    parser.add_argument("--cache", type=Path, required=True,
                        help="shared request cache directory (all experiments; keep it on a local disk)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
