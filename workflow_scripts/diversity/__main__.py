"""Standalone diversity scorer for any corpus.

    python -m workflow_scripts.diversity INPUT --metrics LIST --text-field text --output OUT.json

INPUT is a JSONL file (one object per line, text in --text-field), a Parquet file or a directory of
Parquet shards (column --text-field), or any other file read as plain text with one document per line
(blank lines skipped). OUT.json maps each metric name to {"value": ..., "details": {...}}; with several
--seeds, value is the mean over seeds and details hold std and per-seed values.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from workflow_scripts.diversity import metrics as metric_registry

log = logging.getLogger("workflow_scripts.diversity")


def _epilog() -> str:
    lines = ["metrics (LIST = comma-separated names or groups; '-name' leaves one out):"]
    for name in metric_registry.METRICS:
        wrapped = textwrap.wrap(metric_registry.DESCRIPTIONS[name], 82)
        lines.append(f"  {name:18s}{wrapped[0]}")
        lines.extend(" " * 20 + rest for rest in wrapped[1:])
    groups = "; ".join(f"{g} = {','.join(n)}" for g, n in metric_registry.GROUPS.items() if g != "all")
    lines += ["", *textwrap.wrap(f"groups: {groups}; all = every metric.", 100), "",
              "examples:",
              "  python -m workflow_scripts.diversity docs.txt --metrics lexical --output out.json",
              "  python -m workflow_scripts.diversity shards/ --metrics all,-cluster_agent --scorer gpt2-large \\",
              "      --reference gpt2-xl --seeds 0,1,2 --subset-size 10000 --output out.json",
              "  python -m workflow_scripts.diversity data.jsonl --metrics cluster_agent --judge ./judge-model \\",
              "      --J 5 --M 100 --K 10 --N 5000 --records rounds.parquet --output out.json"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from workflow_scripts.config.diversity import BUILTIN_EMBEDDER

    parser = argparse.ArgumentParser(
        prog="python -m workflow_scripts.diversity", description=__doc__, epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="JSONL, Parquet (file or directory of shards) or text file")
    parser.add_argument("--metrics", default="lexical,embedding",
                        help="comma-separated metrics/groups, or 'all' (default: lexical,embedding)")
    parser.add_argument("--text-field", default="text", help="JSONL key / Parquet column of the text")
    parser.add_argument("--format", choices=["auto", "jsonl", "parquet", "text"], default="auto",
                        help="input format (default: from the file name; directories are Parquet)")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here (default: stdout)")
    boot = parser.add_argument_group("bootstrap")
    boot.add_argument("--seeds", default="0", help="comma-separated seeds, one score each (default: 0)")
    boot.add_argument("--subset-size", type=int, default=None,
                      help="texts drawn per seed without replacement (default: the whole corpus)")
    lex = parser.add_argument_group("lexical metrics")
    lex.add_argument("--tokenizer", default="whitespace",
                     help="'whitespace' (str.split) or a Hugging Face tokenizer directory / hub id")
    lex.add_argument("--ngram-max-n", type=int, default=4, help="n-gram diversity sums n = 1..N (default 4)")
    lex.add_argument("--ngram-scope", choices=["corpus", "document"], default="corpus",
                     help="n-grams of the concatenated corpus (Shaib et al., default) or inside documents only")
    lex.add_argument("--self-repetition-variant", choices=["shaib", "shared_ngrams"], default="shaib",
                     help="Shaib et al.'s definition (default) or the bounded-memory shared-n-gram count")
    lex.add_argument("--self-repetition-n", type=int, default=4, help="n-gram size of self-repetition")
    lex.add_argument("--gzip-level", type=int, default=9, help="gzip level of compression_ratio (default 9)")
    ppl = parser.add_argument_group("perplexity metrics")
    ppl.add_argument("--scorer", default="gpt2-large", help="causal LM directory or hub id (default gpt2-large)")
    ppl.add_argument("--reference", default="gpt2-xl", help="second model of the gap (default gpt2-xl)")
    ppl.add_argument("--ppl-max-tokens", type=int, default=512, help="tokens scored per text (default 512)")
    ppl.add_argument("--ppl-batch-size", type=int, default=8, help="texts per forward pass (default 8)")
    emb = parser.add_argument_group("embedding metrics")
    emb.add_argument("--embedder", default=BUILTIN_EMBEDDER,
                     help=f"sentence-transformers directory / hub id (default {BUILTIN_EMBEDDER}, offline)")
    emb.add_argument("--kmeans-k", type=int, default=10, help="K-means clusters (default 10)")
    emb.add_argument("--embed-batch-size", type=int, default=64, help="texts per embedding batch (default 64)")
    parser.add_argument("--device", default="auto", help="torch device for models (default: cuda if available)")
    agent = parser.add_argument_group("cluster agent")
    agent.add_argument("--judge", default=None, help="judge model: directory or hub id (served name for openai)")
    agent.add_argument("--judge-backend", choices=["transformers", "vllm", "openai"], default="transformers",
                       help="how the judge runs (default transformers)")
    agent.add_argument("--judge-revision", default=None, help="model revision (hub ids; part of the cache key)")
    agent.add_argument("--judge-base-url", default=None, help="openai backend: endpoint root (…/v1)")
    agent.add_argument("--J", type=int, metavar="INT", default=5, help="texts per metadata/metric round (paper 5)")
    agent.add_argument("--M", type=int, metavar="INT", default=100, help="metadata/metric rounds (paper 100)")
    agent.add_argument("--k", type=int, metavar="INT", default=4, help="items kept by the gathering step (default 4)")
    agent.add_argument("--K", type=int, metavar="INT", default=10, help="texts per clustering round (paper 10)")
    agent.add_argument("--N", type=int, metavar="INT", default=5000, help="clustering rounds per seed (paper 5000)")
    agent.add_argument("--no-verification", action="store_true", help="skip the self-verification stage")
    agent.add_argument("--cluster-size", choices=["mean_cluster_size", "round_size"], default="mean_cluster_size",
                       help="S_i convention (default mean_cluster_size: C_i/S_i = C_i^2/n_i)")
    agent.add_argument("--invalid-clusters", choices=["drop", "singletons", "keep"], default="drop",
                       help="samples of invalid clusters: dropped (default), singletons, or kept as clustered")
    agent.add_argument("--unassigned-samples", choices=["drop", "singletons"], default="drop",
                       help="samples the judge put in no cluster: left out (default) or singletons")
    agent.add_argument("--failed-rounds", choices=["skip", "zero"], default="skip",
                       help="rounds without a usable answer: left out of N (default) or scored 0")
    agent.add_argument("--string-mode", choices=["pattern", "free"], default="pattern",
                       help="bounded string patterns (local constrained decoding) or free strings (APIs)")
    agent.add_argument("--min-items", type=int, default=3, help="metadata / metrics per stage-1 answer, at least")
    agent.add_argument("--max-items", type=int, default=5, help="metadata / metrics per stage-1 answer, at most")
    agent.add_argument("--max-string-chars", type=int, default=200,
                       help="bound of the judge's sentences and reasons (names and values: min(40, this))")
    agent.add_argument("--max-sample-chars", type=int, default=2000, help="each text is cut to this length")
    agent.add_argument("--max-new-tokens", type=int, default=2048, help="judge answer limit in tokens")
    agent.add_argument("--temperature", type=float, default=0.0, help="judge temperature of first attempts")
    agent.add_argument("--repetition-penalty", type=float, default=1.0,
                       help="judge repetition penalty (local backends; default 1 = off)")
    agent.add_argument("--structured-output", choices=["grammar", "form"], default=None,
                       help="transformers judge: constrain the JSON (grammar) or fill it as a form (form); "
                            "default: form for builtin: models, grammar otherwise")
    agent.add_argument("--clustering-answer", choices=["clusters", "labels"], default=None,
                       help="clusters (the paper) or one label per text (small judges); default: labels with "
                            "the form layout, clusters otherwise")
    agent.add_argument("--requests-per-batch", type=int, default=1024,
                       help="judge requests per generate() call (default 1024)")
    agent.add_argument("--cache-dir", type=Path, default=Path(".cache/diversity-llm"),
                       help="request cache of the judge (reruns and larger N reuse paid answers)")
    agent.add_argument("--records", type=Path, default=None, help="write the raw clustering rounds (Parquet)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _config(args: argparse.Namespace, names: list[str]):
    from workflow_scripts.config.diversity import DiversityConfig
    from workflow_scripts.llm.builtin import is_builtin

    layout = args.structured_output or ("form" if is_builtin(args.judge) else "grammar")
    answer = args.clustering_answer or ("labels" if layout == "form" else "clusters")

    section = {
        "metrics": names,
        "bootstrap": {"seeds": [int(s) for s in args.seeds.split(",") if s.strip()],
                      "subset_size": args.subset_size},
        "lexical": {"tokenizer": args.tokenizer, "ngram_max_n": args.ngram_max_n,
                    "self_repetition_n": args.self_repetition_n, "gzip_level": args.gzip_level,
                    "ngram_scope": args.ngram_scope, "self_repetition": args.self_repetition_variant},
        "perplexity": {"scorer": "scorer", "reference": "reference", "max_tokens": args.ppl_max_tokens,
                       "batch_size": args.ppl_batch_size, "device": args.device},
        "embedding": {"embedder": args.embedder, "kmeans_k": args.kmeans_k, "batch_size": args.embed_batch_size,
                      "device": args.device},
        "cluster_agent": {
            "judge": "judge" if args.judge else None, "J": args.J, "M": args.M, "k": args.k, "K": args.K,
            "N": args.N, "verification": not args.no_verification,
            "conventions": {"cluster_size": args.cluster_size, "invalid_clusters": args.invalid_clusters,
                            "unassigned_samples": args.unassigned_samples, "failed_rounds": args.failed_rounds},
            "min_items": args.min_items, "max_items": args.max_items,
            "strings": {"mode": args.string_mode, "max_sentence_chars": args.max_string_chars,
                        "max_reason_chars": args.max_string_chars,
                        "max_name_chars": min(40, args.max_string_chars),
                        "max_value_chars": min(40, args.max_string_chars)},
            "max_sample_chars": args.max_sample_chars,
            "decoding": {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
                         "repetition_penalty": args.repetition_penalty},
            "clustering_answer": answer,
            "requests_per_batch": args.requests_per_batch,
            "backend": {"device": args.device, "structured_output": layout},
        },
        "text_field": args.text_field,
    }
    if args.judge_base_url:
        section["cluster_agent"]["backend"]["base_url"] = args.judge_base_url
    return DiversityConfig.model_validate(section)


def run(args: argparse.Namespace) -> dict:
    from pydantic import ValidationError

    from workflow_scripts.diversity.corpus import Corpus
    from workflow_scripts.diversity.scoring import Resources, score_corpus

    names = metric_registry.parse_metrics(args.metrics)
    if "cluster_agent" in names and not args.judge:
        raise ValueError("metric cluster_agent needs --judge MODEL (a directory or hub id); "
                         "or leave it out: --metrics all,-cluster_agent")
    try:
        config = _config(args, names)
    except ValidationError as error:
        raise ValueError(str(error)) from None
    judge = None
    if args.judge:
        def judge():
            from workflow_scripts.config import ModelSpec
            from workflow_scripts.llm.cache import CachedBackend, RequestCache
            from workflow_scripts.llm.loader import LazyBackend, batch_state_dir

            spec = ModelSpec(path=args.judge, revision=args.judge_revision, backend=args.judge_backend)
            backend = LazyBackend(spec, None, config.cluster_agent.backend, state_dir=batch_state_dir(args.cache_dir))
            return CachedBackend(backend, RequestCache(args.cache_dir))

    resources = Resources(tokenizer=args.tokenizer, scorer=(args.scorer, args.scorer),
                          reference=(args.reference, args.reference), judge=judge)
    corpus = Corpus(args.input, args.text_field, args.format)
    report = score_corpus(corpus, config, resources, progress=not args.quiet)
    if args.records is not None and report.cluster_records is not None:
        args.records.parent.mkdir(parents=True, exist_ok=True)
        report.cluster_records.write_parquet(args.records)
    return report.scores_json()


def main(argv: Sequence[str] | None = None) -> int:
    from workflow_scripts.core.artifacts import InputError
    from workflow_scripts.core.cli import setup_logging
    from workflow_scripts.diversity.base import finite
    from workflow_scripts.diversity.cluster_agent.agent import CriteriaError

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(None, args.verbose)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        scores = run(args)
    except (InputError, OSError, ValueError, CriteriaError) as error:  # OSError: a model that cannot load
        log.error("%s", error, exc_info=args.verbose)
        return 2
    text = json.dumps(finite(scores), indent=2, allow_nan=False)
    if args.output is None:
        sys.stdout.write(text + "\n")
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
        log.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
