"""Score a corpus on every configured metric, with the bootstrap over seeds.

For each seed a subset of ``bootstrap.subset_size`` texts is drawn without replacement (the whole
corpus when the size is unset or not smaller than the corpus); every metric is computed on it. The
lexical metrics share one streaming pass over the corpus; embeddings and perplexities are computed
once for the union of the subsets and then reduced per seed; the Cluster-agent draws its rounds from
each seed's subset. Each metric's result is ``{"value": mean over seeds, "details": {"std",
"per_seed", "seeds", "subset_size", "per_seed_details", ...}}``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import polars as pl

from workflow_scripts.config.diversity import EMBEDDING, LEXICAL, DiversityConfig, LexicalConfig
from workflow_scripts.diversity.base import MetricResult
from workflow_scripts.diversity.cluster_agent.score import summarize
from workflow_scripts.diversity.corpus import Corpus

log = logging.getLogger(__name__)

_SUBSET_TAG = 0x5B5E7


@dataclass
class Resources:
    """What the model-based metrics need, resolved by the caller (CLI or pipeline stage)."""

    tokenizer: str = "whitespace"                       # 'whitespace' or a tokenizer directory / hub id
    scorer: tuple[str, str] | None = None               # (display name, model directory or hub id)
    reference: tuple[str, str] | None = None
    judge: Callable[[], Any] | None = None              # returns an LLMBackend (built lazily)


@dataclass
class Report:
    metrics: dict[str, dict[str, Any]]
    documents: int
    subsets: dict[int, int]
    cluster_records: pl.DataFrame | None = None
    cluster_criteria: dict[int, Any] = field(default_factory=dict)
    cluster_usage: dict[str, Any] = field(default_factory=dict)
    # facts of this run only (the stage puts them in the run sidecar, never in hashed files)
    timings_s: dict[str, float] = field(default_factory=dict)
    judge_cache: dict[str, Any] = field(default_factory=dict)  # hits vs. paid requests, backend seconds

    def scores_json(self) -> dict[str, Any]:
        return {name: self.metrics[name] for name in self.metrics}


def draw_subsets(n: int, seeds: list[int], size: int | None) -> dict[int, np.ndarray | None]:
    """Sorted corpus indices per seed; None = the whole corpus."""
    if size is None or size >= n:
        return {seed: None for seed in seeds}
    return {seed: np.sort(np.random.default_rng([_SUBSET_TAG, seed % (1 << 32)]).choice(n, size, replace=False))
            for seed in seeds}


def _bootstrap(per_seed: dict[int, MetricResult], subset_size: int | None, extra: dict | None = None
               ) -> dict[str, Any]:
    summary = summarize({seed: r.value for seed, r in per_seed.items()})
    details = {"std": summary["std"], "per_seed": summary["per_seed"], "seeds": [int(s) for s in per_seed],
               "subset_size": subset_size,
               "per_seed_details": {str(s): r.details for s, r in per_seed.items()}}
    details.update(extra or {})
    return {"value": summary["mean"], "details": details}


def lexical_pass(corpus: Corpus, options: LexicalConfig, tokenizer_spec: str, names: list[str],
                 subsets: dict[int, np.ndarray | None], progress: bool = False) -> dict[int, dict[str, MetricResult]]:
    """One streaming pass computing the lexical metrics for each seed's subset (None = every text).

    Texts in several subsets are tokenised once per batch; memory is the distinct n-grams of each seed.
    """
    from tqdm import tqdm

    from workflow_scripts.diversity.lexical import LexicalScorer
    from workflow_scripts.diversity.tokens import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_spec)
    scorers = {seed: LexicalScorer(names, tokenizer, ngram_max_n=options.ngram_max_n,
                                   self_repetition_n=options.self_repetition_n, gzip_level=options.gzip_level,
                                   ngram_scope=options.ngram_scope, self_repetition=options.self_repetition)
               for seed in subsets}
    first = next(iter(scorers.values()))
    batches = corpus.batches(options.batch_bytes)
    for start, texts in tqdm(batches, desc="lexical metrics", unit="batch", disable=not progress):
        local = {}
        for seed, subset in subsets.items():
            if subset is None:
                local[seed] = np.arange(len(texts), dtype=np.int64)
            else:
                lo, hi = np.searchsorted(subset, [start, start + len(texts)])
                local[seed] = subset[lo:hi] - start
        union = np.unique(np.concatenate(list(local.values())))
        if not len(union):
            continue
        union_texts = texts if len(union) == len(texts) else [texts[i] for i in union]
        batch = first.tokenize(union_texts)
        for seed, rows in local.items():
            if not len(rows):
                continue
            if len(rows) == len(union):
                scorers[seed].update(union_texts, batch)
                continue
            positions = np.searchsorted(union, rows)
            scorers[seed].update([union_texts[p] for p in positions],
                                 batch.select(positions) if batch is not None else None)
    return {seed: scorer.results() for seed, scorer in scorers.items()}


class CorpusScorer:
    def __init__(self, corpus: Corpus, config: DiversityConfig, resources: Resources,
                 progress: bool = True) -> None:
        self.corpus = corpus
        self.config = config
        self.resources = resources
        self.progress = progress
        self.n = len(corpus)
        if self.n == 0:
            from workflow_scripts.core.artifacts import InputError

            raise InputError(f"{corpus.path}: the corpus has no documents")
        self.seeds = list(config.bootstrap.seeds)
        self.subsets = draw_subsets(self.n, self.seeds, config.bootstrap.subset_size)
        self.subset_size = None if all(s is None for s in self.subsets.values()) else config.bootstrap.subset_size

    def indices(self, seed: int) -> np.ndarray:
        subset = self.subsets[seed]
        return np.arange(self.n, dtype=np.int64) if subset is None else subset

    def union(self) -> np.ndarray:
        if any(s is None for s in self.subsets.values()):
            return np.arange(self.n, dtype=np.int64)
        return np.unique(np.concatenate(list(self.subsets.values())))

    # --- lexical -------------------------------------------------------------------------------------------

    def lexical(self, names: list[str]) -> dict[str, dict[int, MetricResult]]:
        options = self.config.lexical
        if self.subset_size is None:  # every seed sees the whole corpus: compute once
            groups = [{self.seeds[0]: None}]
        else:
            size = options.seeds_per_pass or len(self.seeds)
            groups = [{seed: self.subsets[seed] for seed in self.seeds[i:i + size]}
                      for i in range(0, len(self.seeds), size)]
        jobs = [(self.corpus, options, self.resources.tokenizer, names, group, self.progress and i == 0)
                for i, group in enumerate(groups)]
        if options.workers > 1 and len(groups) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(options.workers, len(groups))) as pool:
                outcomes = list(pool.map(lexical_pass, *zip(*jobs)))
        else:
            outcomes = [lexical_pass(*job) for job in jobs]
        results = {seed: result for outcome in outcomes for seed, result in outcome.items()}
        if self.subset_size is None:
            results = {seed: results[self.seeds[0]] for seed in self.seeds}
        return {name: {seed: results[seed][name] for seed in self.seeds} for name in names}

    # --- embeddings ----------------------------------------------------------------------------------------

    def embedding(self, names: list[str]) -> dict[str, dict[int, MetricResult]]:
        from workflow_scripts.diversity.embeddings import Embedder
        from workflow_scripts.diversity.kmeans import kmeans_score
        from workflow_scripts.diversity.vendi import vendi_score

        options = self.config.embedding
        embedder = Embedder(options.embedder, options.device, options.batch_size, options.max_seq_length)
        union = self.union()
        vectors = embedder.embed_batches(self._progress(self.corpus.take(union), "embeddings", len(union)))
        out: dict[str, dict[int, MetricResult]] = {name: {} for name in names}
        for seed in self.seeds:
            rows = np.searchsorted(union, self.indices(seed))
            x = vectors[rows]
            if "kmeans" in names:
                # A k the config sets is a request (more than the texts is an error); the default caps itself.
                k = options.kmeans_k if "kmeans_k" in options.model_fields_set else min(options.kmeans_k, len(x))
                out["kmeans"][seed] = kmeans_score(x, k, seed, options.kmeans_n_init,
                                                   options.kmeans_max_iter, options.kmeans_backend,
                                                   options.device)
                out["kmeans"][seed].details["embedder"] = options.embedder
            if "vendi" in names:
                out["vendi"][seed] = vendi_score(x)
                out["vendi"][seed].details["embedder"] = options.embedder
        return out

    # --- perplexity -----------------------------------------------------------------------------------------

    def perplexity(self, names: list[str]) -> dict[str, dict[int, MetricResult]]:
        from workflow_scripts.diversity.perplexity import PerplexityScorer, perplexity_gap

        options = self.config.perplexity
        union = self.union()
        losses = {}
        roles = ["scorer"] + (["reference"] if "perplexity_gap" in names else [])
        for role in roles:
            target = getattr(self.resources, role)
            if target is None:
                raise ValueError(f"perplexity needs a {role} model")
            model = PerplexityScorer(target[1], max_tokens=options.max_tokens, batch_size=options.batch_size,
                                     device=options.device)
            losses[role] = model.score_batches(self._progress(self.corpus.take(union), f"perplexity ({role})",
                                                              len(union)))
            del model
        out: dict[str, dict[int, MetricResult]] = {name: {} for name in names}
        for seed in self.seeds:
            rows = np.searchsorted(union, self.indices(seed))
            if "perplexity" in names:
                out["perplexity"][seed] = losses["scorer"].subset(rows).result(self.resources.scorer[0])
            if "perplexity_gap" in names:
                out["perplexity_gap"][seed] = perplexity_gap(
                    losses["scorer"].subset(rows), losses["reference"].subset(rows),
                    (self.resources.scorer[0], self.resources.reference[0]))
        return out

    # --- cluster agent --------------------------------------------------------------------------------------

    def cluster_agent(self, report: Report) -> dict[int, MetricResult]:
        from workflow_scripts.diversity.cluster_agent.agent import ClusterAgent, needed_indices, plan_seed
        from workflow_scripts.diversity.cluster_agent.score import score_records

        config = self.config.cluster_agent
        if self.resources.judge is None:
            raise ValueError("cluster_agent needs a judge model")
        if self.n < config.K:
            from workflow_scripts.core.artifacts import InputError

            raise InputError(f"{self.corpus.path}: {self.n} documents, fewer than cluster_agent.K = {config.K}")
        plans = [plan_seed(seed, self.indices(seed), config) for seed in self.seeds]
        texts = self.corpus.texts_at(needed_indices(plans), max_chars=config.max_sample_chars)
        judge = self.resources.judge()
        try:
            run = ClusterAgent(judge, config, progress=self.progress).run(plans, texts)
        finally:
            cache = getattr(judge, "cache", None)
            if cache is not None and hasattr(cache, "close"):
                cache.close()
        report.cluster_records = run.records
        report.cluster_criteria = run.criteria
        report.cluster_usage = run.usage_dict()
        if hasattr(judge, "hits"):  # a CachedBackend: what was paid now vs. served from the cache
            report.judge_cache = {
                "requests": judge.requests, "hits": judge.hits, "backend_requests": judge.backend_requests,
                "backend_seconds": round(judge.backend_seconds, 3),
                "backend_prompt_tokens": judge.backend_prompt_tokens,
                "backend_completion_tokens": judge.backend_completion_tokens,
                "judge_loaded": bool(getattr(judge.backend, "loaded", True)),
            }
        scores = score_records(run.records, config.conventions)
        return {seed: MetricResult(scores[seed]["value"], scores[seed]) for seed in self.seeds}

    # --- all ------------------------------------------------------------------------------------------------

    def run(self) -> Report:
        names = list(self.config.metrics)
        report = Report(metrics={}, documents=self.n,
                        subsets={s: len(self.indices(s)) for s in self.seeds})
        per_metric: dict[str, dict[int, MetricResult]] = {}
        groups = [
            ([m for m in names if m in LEXICAL], self.lexical, "lexical"),
            ([m for m in names if m in ("perplexity", "perplexity_gap")], self.perplexity, "perplexity"),
            ([m for m in names if m in EMBEDDING], self.embedding, "embedding"),
        ]
        for group, compute, label in groups:
            if group:
                started = time.perf_counter()
                per_metric.update(compute(group))
                report.timings_s[label] = round(time.perf_counter() - started, 3)
        if "cluster_agent" in names:
            started = time.perf_counter()
            per_metric["cluster_agent"] = self.cluster_agent(report)
            report.timings_s["cluster_agent"] = round(time.perf_counter() - started, 3)
        extra = {"cluster_agent": {"conventions": self.config.cluster_agent.conventions.model_dump(),
                                   "usage": report.cluster_usage}}
        for name in names:
            report.metrics[name] = _bootstrap(per_metric[name], self.subset_size, extra.get(name))
        return report

    def _progress(self, batches, desc: str, total: int):
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="text", disable=not self.progress)
        for texts in batches:
            yield texts
            bar.update(len(texts))
        bar.close()


def score_corpus(corpus: Corpus, config: DiversityConfig, resources: Resources, progress: bool = True) -> Report:
    return CorpusScorer(corpus, config, resources, progress).run()
