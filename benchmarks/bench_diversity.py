"""Benchmark of the diversity metrics.

1. Throughput (MB/s of UTF-8 text, one core) of each lexical metric alone, tokenisation included, and of
   the four together in one pass, on a deterministic generated corpus (default 50 MB: ~200-word
   documents of Zipf-distributed pseudo-words with recurring phrases, so n-gram sets are realistic).
   Target: every lexical metric >= 5 MB/s.
2. Cost of the LLM Cluster-agent per scored sample (a sample shown in a clustering round): LLM calls
   per stage, and prompt / output tokens. Measured twice:
   - at the paper's settings (J=5, M=100, k=4, K=10, texts cut at 2,000 characters) with the scripted
     judge (deterministic, instant): calls are exact; prompt tokens are estimated as characters / 4
     (the usual rule of thumb for English BPE vocabularies); output tokens of the scripted judge are
     not those of a real model and are left out;
   - with a real (tiny, random, sampling at temperature 1) transformers judge on a small run: prompt and
     output tokens as counted by the backend (its outputs run to the schema's string bounds).
3. With ``--single-line MB``: the standalone scorer (``python -m workflow_scripts.diversity``, a child
   process) on one document of MB megabytes on a single line: seconds and peak RSS (the child's
   ``ru_maxrss``), for ``--single-line-metrics`` (default: the lexical metrics and Vendi; K-means needs
   at least k texts).
   Long documents are hashed in 1 MB pieces and models see only their first tokens' characters, so the
   peak is the distinct n-grams' arrays (about 100 bytes per token), not the text's tokenizations.

    OMP_NUM_THREADS=1 python benchmarks/bench_diversity.py [--size-mb 50] [--out benchmarks/results/diversity.json]
    OMP_NUM_THREADS=1 python benchmarks/bench_diversity.py --single-line 50   # only part 3
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from workflow_scripts.diversity.lexical import LEXICAL_METRICS, LexicalScorer  # noqa: E402
from workflow_scripts.diversity.tokens import WhitespaceTokenizer  # noqa: E402

log = logging.getLogger("bench_diversity")
BATCH_BYTES = 1 << 20


# --- corpus -----------------------------------------------------------------------------------------------


def make_vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    syllables = np.array(["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "de", "pa", "gri", "sto", "an",
                          "el", "or", "un", "che", "qua", "zi", "bo"])
    lengths = rng.integers(1, 5, size=size)
    words = ["".join(rng.choice(syllables, n)) for n in lengths]
    return np.array([f"{w}{i % 7 if i % 11 == 0 else ''}" for i, w in enumerate(words)])


def generate_corpus(size_mb: float, seed: int = 0) -> list[str]:
    """Deterministic documents totalling ``size_mb`` MB of UTF-8."""
    rng = np.random.default_rng(seed)
    vocabulary = make_vocabulary(50_000, rng)
    phrases = [" ".join(vocabulary[rng.zipf(1.2, 8) % len(vocabulary)]) for _ in range(2000)]
    target = int(size_mb * 1_000_000)
    docs, total = [], 0
    while total < target:
        ids = rng.zipf(1.15, size=200) % len(vocabulary)
        words = vocabulary[ids].tolist()
        for _ in range(rng.integers(0, 4)):  # recurring phrases, as in templated synthetic text
            words.insert(int(rng.integers(0, len(words))), phrases[int(rng.zipf(1.3)) % len(phrases)])
        doc = " ".join(words)
        docs.append(doc)
        total += len(doc.encode()) + 1
    return docs


def batches(docs: list[str]) -> list[list[str]]:
    out, current, size = [], [], 0
    for doc in docs:
        current.append(doc)
        size += len(doc) + 1
        if size >= BATCH_BYTES:
            out.append(current)
            current, size = [], 0
    if current:
        out.append(current)
    return out


# --- throughput -------------------------------------------------------------------------------------------


def throughput(docs: list[str]) -> dict:
    parts = batches(docs)
    mb = sum(len(d.encode()) + 1 for d in docs) / 1e6
    tokenizer = WhitespaceTokenizer()
    results = {}
    for names in [[n] for n in LEXICAL_METRICS] + [list(LEXICAL_METRICS)]:
        label = names[0] if len(names) == 1 else "all_four_one_pass"
        scorer = LexicalScorer(names, tokenizer)
        started = time.perf_counter()
        for part in parts:
            scorer.update(part)
        values = scorer.results()
        seconds = time.perf_counter() - started
        results[label] = {
            "mb_per_s": round(mb / seconds, 2), "seconds": round(seconds, 2),
            "values": {n: r.value for n, r in values.items()},
            "memory_bytes": {n: r.details.get("memory_bytes") for n, r in values.items()
                             if r.details.get("memory_bytes") is not None},
        }
        log.info("%-20s %7.2f MB/s (%.1f s)", label, mb / seconds, seconds)
    started = time.perf_counter()
    for part in parts:
        tokenizer(part)
    results["tokenisation_only"] = {"mb_per_s": round(mb / (time.perf_counter() - started), 2)}
    return {"corpus_mb": round(mb, 2), "documents": len(docs), "metrics": results}


# --- cluster agent cost -----------------------------------------------------------------------------------


def agent_cost_paper(docs: list[str], rounds: int) -> dict:
    """Exact calls and estimated prompt tokens at the paper's settings (scripted judge)."""
    from workflow_scripts.config.diversity import ClusterAgentConfig
    from workflow_scripts.diversity.cluster_agent.agent import ClusterAgent, plan_seed
    from workflow_scripts.diversity.cluster_agent.scripted import ScriptedJudge

    config = ClusterAgentConfig(judge="scripted", J=5, M=100, k=4, K=10, N=rounds, strings={"mode": "free"})
    texts = {i: d[: config.max_sample_chars] for i, d in enumerate(docs[:20_000])}
    plan = plan_seed(0, np.arange(len(texts)), config)
    judge = ScriptedJudge(max_valid_size=10)
    run = ClusterAgent(judge, config, progress=False).run([plan], texts)
    chars: dict[str, int] = {}
    calls: dict[str, int] = {}
    from workflow_scripts.diversity.cluster_agent.scripted import stage_of

    for call in judge.calls:
        for request in call:
            stage = stage_of(request.json_schema)
            chars[stage] = chars.get(stage, 0) + sum(len(m["content"]) for m in request.messages)
            calls[stage] = calls.get(stage, 0) + 1
    samples = rounds * config.K
    per_stage = {s: {"calls": calls[s], "calls_per_sample": calls[s] / samples,
                     "est_prompt_tokens_per_call": chars[s] / 4 / calls[s]} for s in calls}
    clustering_and_verification = sum(chars[s] for s in ("clustering", "verification")) / 4
    return {
        "settings": {"J": 5, "M": 100, "k": 4, "K": 10, "N": rounds, "max_sample_chars": config.max_sample_chars},
        "scored_samples": samples,
        "stages": per_stage,
        "calls_per_sample_at_N": sum(calls.values()) / samples,
        "calls_per_sample_asymptotic": sum(calls[s] for s in ("clustering", "verification")) / samples,
        "est_prompt_tokens_per_sample_asymptotic": clustering_and_verification / samples,
        "est_prompt_tokens_per_sample_at_N": sum(chars.values()) / 4 / samples,
        "note": "a verification call is made only for rounds with a multi-member cluster (here those the "
                "scripted judge, grouping by first word, produced): at most one per round; prompt tokens = "
                "characters / 4; the gathering prompts are short here because the scripted proposals repeat "
                "(a real judge's M*5 distinct proposals make them ~M*60 tokens)",
        "records": run.records.height,
    }


def agent_cost_tiny(docs: list[str]) -> dict:
    """Measured tokens with a real transformers judge (tiny random Llama) on a small run."""
    import torch

    from workflow_scripts.config import ModelSpec, TinyLlama, TokenizerSpec
    from workflow_scripts.config.diversity import ClusterAgentConfig
    from workflow_scripts.diversity.cluster_agent.agent import ClusterAgent, plan_seed
    from workflow_scripts.llm.loader import load_backend
    from workflow_scripts.local_models import save_tiny_llama, train_tokenizer

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(docs[:2000], TokenizerSpec(vocab_size=2000, min_frequency=2))
        folder = save_tiny_llama(TinyLlama(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4), tokenizer, Path(tmp) / "judge")
        backend = load_backend(ModelSpec(path=str(folder)), None, {"device": "cpu", "batch_size": 8})
        config = ClusterAgentConfig(judge="tiny", J=2, M=2, k=2, K=4, N=8, max_sample_chars=300,
                                    strings={"max_name_chars": 20, "max_sentence_chars": 60,
                                             "max_reason_chars": 60, "max_value_chars": 20},
                                    decoding={"temperature": 1.0, "retry_temperature": 1.0,
                                              "max_new_tokens": 1500})
        texts = {i: d for i, d in enumerate(docs[:500])}
        started = time.perf_counter()
        run = ClusterAgent(backend, config, progress=False).run([plan_seed(0, np.arange(500), config)], texts)
        seconds = time.perf_counter() - started
    usage = run.usage_dict()
    samples = config.N * config.K
    return {
        "settings": {"J": 2, "M": 2, "k": 2, "K": 4, "N": 8, "max_sample_chars": 300},
        "usage": usage,
        "seconds": round(seconds, 1),
        "calls_per_sample": sum(u["calls"] for u in usage.values()) / samples,
        "prompt_tokens_per_sample": sum(u["prompt_tokens"] for u in usage.values()) / samples,
        "output_tokens_per_sample": sum(u["completion_tokens"] for u in usage.values()) / samples,
        "failed_rounds": int((run.records["status"] != "ok").sum()),
    }


# --- one huge document --------------------------------------------------------------------------------------


def single_line(size_mb: float, metrics: str) -> dict:
    """The standalone scorer on one ``size_mb`` MB single-line document: wall seconds and the child's peak RSS."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "one_line.txt"
        with open(corpus, "w") as handle:
            for doc in generate_corpus(size_mb):
                handle.write(doc + " ")
            handle.write("\n")
        size = corpus.stat().st_size
        command = [sys.executable, "-m", "workflow_scripts.diversity", str(corpus), "--metrics", metrics,
                   "--quiet", "--output", str(Path(folder) / "scores.json")]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        scores = json.loads((Path(folder) / "scores.json").read_text())
    result = {"bytes": size, "metrics": metrics, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1),
              "values": {name: entry["value"] for name, entry in scores.items()}}
    log.info("single-line %.1f MB document (%s): %.1f s, peak RSS %.0f MB", size / 1e6, metrics, seconds, peak_mb)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=50.0)
    parser.add_argument("--agent-rounds", type=int, default=500, help="N for the paper-settings cost estimate")
    parser.add_argument("--skip-agent", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diversity.json"))
    parser.add_argument("--single-line", type=float, default=None, metavar="MB",
                        help="only run the standalone scorer on one MB-megabyte single-line document")
    parser.add_argument("--single-line-metrics", default="lexical,vendi",
                        help="metrics for --single-line (default: lexical,vendi; K-means needs k texts)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.single_line is not None:
        print(json.dumps(single_line(args.single_line, args.single_line_metrics), indent=2))
        return 0
    started = time.perf_counter()
    docs = generate_corpus(args.size_mb)
    log.info("generated %d documents in %.1f s", len(docs), time.perf_counter() - started)
    report = {"machine": {"python": platform.python_version(), "cpu_threads_used": 1,
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
              "lexical": throughput(docs)}
    if not args.skip_agent:
        report["cluster_agent_paper_settings"] = agent_cost_paper(docs, args.agent_rounds)
        log.info("cluster agent (paper settings): %.3f calls and ~%.0f prompt tokens per scored sample",
                 report["cluster_agent_paper_settings"]["calls_per_sample_asymptotic"],
                 report["cluster_agent_paper_settings"]["est_prompt_tokens_per_sample_asymptotic"])
        report["cluster_agent_tiny_judge"] = agent_cost_tiny(docs)
        log.info("cluster agent (tiny judge): %s", json.dumps({k: v for k, v in
                 report["cluster_agent_tiny_judge"].items() if k != "usage"}))
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
