"""Benchmark of the generation path on the tiny random model (CPU by default).

1. Transformers backend throughput (requests/s, output tokens/s) with JSON-schema-constrained decoding
   at batch sizes 1, 8 and 32.
2. Overhead of a fully cached rerun of the generation stage vs the uncached run (target: < 5 %).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generate.py [--requests 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

TEXTS = [
    "The river carries sediment from the mountains to the delta, where it settles into fertile plains.",
    "A prime number has exactly two divisors: one and itself. The first primes are 2, 3, 5, 7 and 11.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the chloroplast.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "In 1850 the railway reached the town, and within a decade its population had doubled.",
] * 40
PATHS = ["Science/Physics/Optics", "Science/Biology/Cells", "History/Rome/Roads", "Science/Chemistry/Acids",
         "Arts/Music/Rhythm", "History/Egypt/Nile", "Science/Geology/Rocks", "Arts/Painting/Colour"]
SCHEMA = {"min_passages": 3, "max_passages": 5, "max_nuance_chars": 12, "max_passage_chars": 60,
          "max_question_chars": 40, "max_option_chars": 16, "max_explanation_chars": 40}


def build_model(root: Path) -> Path:
    from workflow_scripts.config import TinyLlama, TokenizerSpec
    from workflow_scripts.local_models import save_tiny_llama, train_tokenizer

    tokenizer = train_tokenizer(TEXTS, TokenizerSpec(vocab_size=400, min_frequency=1))
    return save_tiny_llama(TinyLlama(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=1024), tokenizer, root / "tiny")


def bench_backend(model_dir: Path, n_requests: int, batch_sizes: list[int], device: str) -> list[dict]:
    from workflow_scripts.config import ModelSpec
    from workflow_scripts.config.generate import BackendOptions, PromptConfig, SchemaBounds
    from workflow_scripts.generate.templates import Topic, plan_generation
    from workflow_scripts.llm.loader import load_backend
    from workflow_scripts.llm.types import LLMRequest

    bounds = SchemaBounds(**SCHEMA)
    topics = [Topic(f"t{i}", p, (p.split("/")[-1].lower(),)) for i, p in enumerate(PATHS)]
    personas = ["A student", "A teacher", "A hobbyist", "A nurse", "An engineer"]
    requests = []
    for i in range(n_requests):
        plan = plan_generation("topic_styles_persona", topics[i % len(topics)], i // len(topics),
                               prompts=PromptConfig(personas_per_prompt=3), bounds=bounds, personas=personas,
                               global_seed=0)
        requests.append(LLMRequest(messages=plan.messages, json_schema=plan.json_schema, seed=i, temperature=1.0,
                                   top_p=0.95, max_new_tokens=1200))
    results = []
    backend = load_backend(ModelSpec(path=str(model_dir)), options=BackendOptions(device=device, batch_size=1))
    backend.generate(requests[:2])  # warm-up (index compilation, first forward)
    for size in batch_sizes:
        backend.options = BackendOptions(device=device, batch_size=size)
        started = time.perf_counter()
        responses = backend.generate(requests)
        seconds = time.perf_counter() - started
        tokens = sum(r.completion_tokens for r in responses)
        valid = sum(r.parsed is not None for r in responses)
        results.append({"batch_size": size, "requests": len(requests), "valid_json": valid,
                        "seconds": round(seconds, 3), "requests_per_s": round(len(requests) / seconds, 2),
                        "output_tokens_per_s": round(tokens / seconds, 1),
                        "mean_output_tokens": round(tokens / len(requests), 1)})
        logging.getLogger("bench").info("batch %d: %s", size, results[-1])
    return results


def bench_cached_rerun(model_dir: Path, root: Path, topics: int, generations: int, device: str) -> dict:
    import polars as pl

    from workflow_scripts.core.artifacts import JobIdentity, build_artifact
    from workflow_scripts.generate.stage import run_stage, split_config

    with build_artifact(root / "models", identity=JobIdentity(stage="local_models"), inputs={}) as art:
        shutil.copytree(model_dir, art.path / "tiny")
    paths = [f"{p}/part {i}" for i in range(topics // len(PATHS) + 1) for p in PATHS][:topics]
    with build_artifact(root / "topics", identity=JobIdentity(stage="topic_sample"), inputs={}) as art:
        pl.DataFrame({"topic_id": [f"t{i}" for i in range(topics)], "path": paths,
                      "keywords": [[p.split("/")[1].lower()] for p in paths]}).write_parquet(art.path / "topics.parquet")
    (root / "personas.jsonl").write_text("".join(json.dumps({"persona": f"Reader {i}"}) + "\n" for i in range(20)))
    raw = {
        "seed": 1, "models": {"tiny": {"local": "tiny"}}, "local_models": {"models": {"tiny": {}}},
        "real_corpus": {"sources": [{"name": "d", "kind": "web", "type": "python_stdlib_docs"}], "weights": {"web": 1}},
        "experiments": {"e": {"synthetic": {"topics": topics, "generations_per_topic": generations,
                                            "template": "topic_styles_persona", "generator": "tiny"}}},
        "generate": {"decoding": {"max_new_tokens": 1200}, "json_schema": SCHEMA,
                     "prompts": {"personas_path": str(root / "personas.jsonl"), "personas_per_prompt": 3},
                     "models": {"tiny": {"backend": {"device": device, "batch_size": 16}}}},
    }
    config, generation = split_config(raw)
    timings = {}
    for name in ("uncached", "cached"):
        started = time.perf_counter()
        run_stage(config, generation, experiment="e", topics_dir=root / "topics", cache_dir=root / "cache",
                  out=root / f"out-{name}", models_dir=root / "models", progress=False)
        timings[name] = time.perf_counter() - started
    return {"requests": topics * generations, "uncached_s": round(timings["uncached"], 3),
            "cached_s": round(timings["cached"], 3),
            "cached_over_uncached_pct": round(100 * timings["cached"] / timings["uncached"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32, help="requests per batch-size measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--topics", type=int, default=16, help="T of the cached-rerun measurement")
    parser.add_argument("--generations", type=int, default=4, help="G of the cached-rerun measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: build the tiny one)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        model_dir = args.model or build_model(root)
        throughput = bench_backend(model_dir, args.requests, args.batch_sizes, args.device)
        print("transformers backend, JSON-schema constrained, tiny random Llama "
              f"(device={args.device}, threads={torch.get_num_threads()})")
        print(f"{'batch':>5} {'requests':>8} {'valid':>5} {'seconds':>8} {'req/s':>7} {'out tok/s':>9} {'tok/req':>7}")
        for r in throughput:
            print(f"{r['batch_size']:>5} {r['requests']:>8} {r['valid_json']:>5} {r['seconds']:>8} "
                  f"{r['requests_per_s']:>7} {r['output_tokens_per_s']:>9} {r['mean_output_tokens']:>7}")
        rerun = bench_cached_rerun(model_dir, root, args.topics, args.generations, args.device)
        print(f"generation stage, {rerun['requests']} requests: uncached {rerun['uncached_s']} s, fully cached "
              f"rerun {rerun['cached_s']} s = {rerun['cached_over_uncached_pct']} % of uncached (target < 5 %)")
        print(json.dumps({"throughput": throughput, "cached_rerun": rerun}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
