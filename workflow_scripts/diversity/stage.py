"""Stage: diversity scores of one experiment's synthetic generations (Cluster-agent + baselines).

Reads the generation artifact's Parquet shards (column ``diversity.text_field``), computes every metric
of ``diversity.metrics`` with the bootstrap over ``diversity.bootstrap.seeds`` and writes one artifact:

- ``scores.json``: metric -> {"value": mean over seeds, "details": {"std", "per_seed", ...}};
- ``cluster_rounds.parquet``: the Cluster-agent's raw records, one row per (seed, round): sample ids,
  every cluster with members, uniqueness reasoning, metadata, scores, validity and the verifier's
  reasoning, and the criteria header (empty table when the metric is off). Recompute D under any
  convention with ``cluster_agent.score.score_records`` - no LLM calls;
- ``cluster_criteria.json``: per seed, the stage 1-3 outputs (raw rounds, gathered items, sentences).

Models named in the config come from the ``models`` registry; ``local: NAME`` ones from ``--models``.
Judge requests go through the shared content-addressed request cache (``--cache``): a rerun, or a
larger N, pays only for rounds not yet answered. The manifest records the judge's tokens and dollars (at its
``models.NAME.price``, as if every answer were paid; ``judge_*``), the run sidecar what this run paid;
``diversity.cluster_agent.budget_usd`` stops the stage before a batch that could exceed it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from workflow_scripts.config import PipelineConfig
from workflow_scripts.config.diversity import DiversityConfig
from workflow_scripts.core.artifacts import build_artifact, read_manifest
from workflow_scripts.core.cli import add_common_arguments, load_checked_config, run_main
from workflow_scripts.core.identity import job_identity
from workflow_scripts.generate.reader import generation_shards

log = logging.getLogger(__name__)

STAGE = "diversity"
GENERATION_STAGE = "generate"
PACKAGE = Path(__file__).resolve().parent




def resources(config: PipelineConfig, section: DiversityConfig, models_dir: Path | None, cache_dir: Path,
              budget=None):
    """What the metrics need; the judge's cache misses are checked against ``budget`` (a
    :class:`~workflow_scripts.llm.cost.Budget`) before they are sent."""
    from workflow_scripts.diversity.scoring import Resources
    from workflow_scripts.llm.loader import resolve_model_source

    tokenizer = section.lexical.tokenizer
    if tokenizer.startswith("local:"):
        if models_dir is None:
            raise FileNotFoundError(f"diversity.lexical.tokenizer {tokenizer!r} needs --models DIR")
        tokenizer = str(models_dir / tokenizer.removeprefix("local:"))
    names = section.model_names()
    out = Resources(tokenizer=tokenizer)
    for role in ("scorer", "reference"):
        if role in names:
            setattr(out, role, (names[role], resolve_model_source(config.models[names[role]], models_dir)))
    if "judge" in names:
        spec = config.models[names["judge"]]

        def judge():
            from workflow_scripts.llm.cache import CachedBackend, RequestCache
            from workflow_scripts.llm.loader import LazyBackend, batch_state_dir

            # lazy: a rerun answered entirely from the cache never loads the judge's weights
            backend = LazyBackend(spec, models_dir, section.cluster_agent.backend,
                                  state_dir=batch_state_dir(cache_dir))
            cached = CachedBackend(backend, RequestCache(cache_dir))
            if budget is None:
                return cached
            from workflow_scripts.llm.cost import BudgetedBackend

            return BudgetedBackend(cached, budget)

        out.judge = judge
    return out


def judge_budget(config: PipelineConfig, section: DiversityConfig, experiment: str):
    """The judge's budget (``diversity.cluster_agent.budget_usd``), or None when the Cluster-agent is off."""
    from workflow_scripts.llm.cost import Budget, backend_mode

    judge = section.model_names().get("judge")
    if judge is None:
        return None
    agent = section.cluster_agent
    return Budget(agent.budget_usd, config.models[judge].price, backend_mode(agent.backend),
                  "diversity.cluster_agent.budget_usd", where=f"diversity {experiment}")


def judge_costs(usage: dict | None, budget) -> tuple[dict[str, float | int], dict[str, float | int]]:
    """Tokens and dollars of the judge's answers as if all were paid (manifest), and what this run paid."""
    from workflow_scripts.llm.cost import Usage, usage_counts

    if budget is None:
        return {}, {}
    stages = [u for name, u in (usage or {}).items() if name != "cache" and isinstance(u, dict) and "calls" in u]
    used = Usage(sum(u["calls"] for u in stages), sum(u["prompt_tokens"] for u in stages),
                 sum(u.get("cached_prompt_tokens", 0) for u in stages), sum(u["completion_tokens"] for u in stages))
    return (usage_counts(used, budget.price, budget.mode, prefix="judge_"),
            {**usage_counts(budget.paid, budget.price, budget.mode, prefix="judge_paid_"),
             "judge_paid_requests": budget.paid.requests})


def structured_output_rates(generations: Path, usage: dict | None) -> dict[str, float]:
    """How often the LLMs answered with usable, schema-valid JSON: the generator's rates (from the generations'
    manifest) and the judge's over all its requests (first attempt, and within max_attempts)."""
    counts = read_manifest(generations).counts  # generation_shards checked the stage (generated, external, mixed)
    rates = {f"generation_{key}": counts[key] for key in ("valid_first_attempt_rate", "valid_within_attempts_rate")
             if key in counts}
    stages = [u for name, u in (usage or {}).items() if name != "cache" and isinstance(u, dict) and "requests" in u]
    requests = sum(u["requests"] for u in stages)
    if requests:
        rates["judge_valid_first_attempt_rate"] = round(sum(u.get("first_attempt_ok", 0) for u in stages) / requests, 4)
        rates["judge_valid_within_attempts_rate"] = round(1 - sum(u["failures"] for u in stages) / requests, 4)
    return rates


EXAMPLES_FILE = "examples.json"


def write_examples(directory: Path, corpus, count: int = 2, max_chars: int = 1500) -> None:
    """The first texts of the scored corpus, so a report can show what was measured."""
    import numpy as np

    found = corpus.texts_at(np.arange(min(count, len(corpus))), max_chars)
    texts = [found[i] for i in sorted(found)]
    (directory / EXAMPLES_FILE).write_text(json.dumps(texts, indent=1, ensure_ascii=False) + "\n")


def write_outputs(directory: Path, report) -> None:
    import polars as pl

    from workflow_scripts.diversity.base import finite
    from workflow_scripts.diversity.cluster_agent.agent import RECORD_SCHEMA

    (directory / "scores.json").write_text(json.dumps(finite(report.scores_json()), indent=2,
                                                      allow_nan=False) + "\n")
    records = report.cluster_records if report.cluster_records is not None else pl.DataFrame(schema=RECORD_SCHEMA)
    records.write_parquet(directory / "cluster_rounds.parquet")
    (directory / "cluster_criteria.json").write_text(
        json.dumps(finite({str(k): v for k, v in report.cluster_criteria.items()}), indent=1, sort_keys=True,
                   ensure_ascii=False, allow_nan=False) + "\n")


def run(args: argparse.Namespace) -> None:
    from workflow_scripts.diversity.corpus import Corpus
    from workflow_scripts.diversity.scoring import score_corpus

    config = load_checked_config(args.config, args.experiment)
    section = config.diversity_for(args.experiment)
    shards = generation_shards(args.generations, config.synthetic_set(args.experiment))
    corpus = Corpus.from_files(shards, section.text_field)
    cache_dir = args.cache or Path(config.data_root) / "cache" / "llm"
    budget = judge_budget(config, section, args.experiment)
    needed = resources(config, section, args.models, cache_dir, budget)
    inputs: dict[str, Path] = {"generations": args.generations}
    if args.models is not None:
        inputs["models"] = args.models
    identity = job_identity(config, STAGE, args.experiment, inputs)
    with build_artifact(args.out, identity=identity, inputs=inputs) as artifact:
        report = score_corpus(corpus, section, needed, progress=not args.no_progress)
        write_outputs(artifact.path, report)
        write_examples(artifact.path, corpus)
        artifact.counts.update(documents=report.documents, metrics=len(report.metrics),
                               cluster_rounds=0 if report.cluster_records is None else report.cluster_records.height,
                               **structured_output_rates(args.generations, report.cluster_usage))
        judged, paid = judge_costs(report.cluster_usage, budget)
        artifact.counts.update(judged)
        artifact.run.update(paid, timings_s=report.timings_s, judge_cache=report.judge_cache)
        if budget is not None:
            from workflow_scripts.llm.cost import price_info

            artifact.info["judge_cost"] = price_info(budget.price, budget.mode)
        artifact.info.update(
            metrics=list(report.metrics), text_field=section.text_field, shards=len(shards),
            subset_sizes={str(k): v for k, v in report.subsets.items()}, cluster_agent_usage=report.cluster_usage,
            values={name: result["value"] for name, result in report.metrics.items()},
        )
        for name, result in report.metrics.items():
            log.info("%s: %.6g (std %.3g over %d seeds)", name, result["value"], result["details"]["std"],
                     len(result["details"]["seeds"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.diversity.stage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, experiment=True)
    parser.add_argument("--generations", type=Path, required=True,
                        help="generation artifact of the experiment (Parquet shards with the text column)")
    parser.add_argument("--models", type=Path, default=None,
                        help="local_models artifact (needed for models given as 'local: NAME')")
    parser.add_argument("--cache", "--cache-dir", dest="cache", type=Path, default=None,
                        help="shared LLM request cache directory, as for the generation stage "
                        "(default: <data_root>/cache/llm; keep it on a local disk)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
