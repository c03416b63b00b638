"""Benchmark: peak memory and throughput of the real_corpus stage at 1x and 10x corpus size.

For each scale the script

1. generates (or reuses) a deterministic JSONL corpus under the work directory: web, code and math
   documents in the ratio 4 : 1 : 1, made of random sentences over a synthetic lexicon, a few hundred to
   ~6,000 characters each, in blank-line separated paragraphs (so that some documents are split), written as
   shards of about 16 MB;
2. writes a pipeline configuration whose ``real_corpus`` reads these shards with ``max_chars`` twice the
   corpus size, so that (nearly) every document is kept and the output is as large as the input;
3. runs the stage (``python -m workflow_scripts.real_corpus``, or ``--reference-module FILE``, e.g. the
   previous version from ``git show HEAD~1:workflow_scripts/real_corpus.py > /tmp/old.py``) in a fresh
   child process and reads that child's peak RSS from ``os.wait4``.

It prints, per implementation and scale, the input size, documents kept, wall time, throughput (MB of
JSONL input per second) and peak RSS, then the ratio of the peak RSS at the largest scale to the one at
the smallest (target: within 10 %, i.e. memory flat in corpus size).

Usage: python benchmarks/bench_real_corpus.py [--base-mb 40] [--scales 1 10] [--reference-module FILE]
       [--work-dir benchmarks/results/real_corpus] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIND_SHARES = {"web": 4 / 6, "code": 1 / 6, "math": 1 / 6}
SHARD_BYTES = 16_000_000
SEED = 20241015


# --- corpus -------------------------------------------------------------------------------------------------


def sentence_pool(rng, size: int = 20_000) -> list[str]:
    """Random sentences over a synthetic lexicon: cheap, random-ish text to compose documents from."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "an", "er", "in", "on", "th", "st", "qu",
                 "zo", "be", "de", "ar", "el", "is", "or", "un", "ve", "wa", "yo", "gr", "pl", "tr", "ch"]
    counts = rng.integers(1, 5, size=5000).tolist()
    syllable_picks = rng.integers(0, len(syllables), size=sum(counts)).tolist()
    lexicon, start = [], 0
    for n in counts:
        lexicon.append("".join(syllables[i] for i in syllable_picks[start:start + n]))
        start += n
    lengths = rng.integers(4, 24, size=size).tolist()
    word_picks = rng.integers(0, len(lexicon), size=sum(lengths)).tolist()
    pool, start = [], 0
    for n in lengths:
        pool.append(" ".join(lexicon[i] for i in word_picks[start:start + n]).capitalize() + ".")
        start += n
    return pool


def generate_documents(rng, sentences: list[str], count: int = 512) -> list[str]:
    """``count`` documents of 1-11 paragraphs of 2-11 random sentences (a few hundred to ~6,000 chars)."""
    paragraphs_per_doc = rng.integers(1, 12, size=count)
    sentences_per_paragraph = rng.integers(2, 12, size=int(paragraphs_per_doc.sum())).tolist()
    picks = rng.integers(0, len(sentences), size=sum(sentences_per_paragraph)).tolist()
    paragraphs, start = [], 0
    for n in sentences_per_paragraph:
        paragraphs.append(" ".join([sentences[i] for i in picks[start:start + n]]))
        start += n
    documents, start = [], 0
    for n in paragraphs_per_doc.tolist():
        documents.append("\n\n".join(paragraphs[start:start + n]))
        start += n
    return documents


def write_corpus(folder: Path, total_bytes: int) -> dict[str, list[str]]:
    """JSONL shards per kind under ``folder`` (reused when complete); returns the shard paths per kind."""
    import numpy as np

    done = folder / "DONE.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    sentences = sentence_pool(rng)
    shards: dict[str, list[str]] = {}
    for kind, share in KIND_SHARES.items():
        written, shard, handle = 0, 0, None
        shards[kind] = []
        while written < total_bytes * share:
            for text in generate_documents(rng, sentences):
                if handle is None or handle.tell() >= SHARD_BYTES:
                    if handle is not None:
                        handle.close()
                    path = folder / f"{kind}-{shard:04d}.jsonl"
                    shards[kind].append(str(path))
                    handle, shard = path.open("w", encoding="utf-8"), shard + 1
                line = json.dumps({"text": text}) + "\n"
                handle.write(line)
                written += len(line)
                if written >= total_bytes * share:
                    break
        if handle is not None:
            handle.close()
    done.write_text(json.dumps(shards))
    return shards


def write_config(path: Path, shards: dict[str, list[str]], input_bytes: int) -> None:
    import yaml

    raw = {
        "data_root": str(path.parent / "data"),
        "seed": 1234,
        "models": {"gen": {"local": "generator"}},
        "local_models": {"tokenizer": {"vocab_size": 300, "min_frequency": 1},
                         "models": {"generator": {"hidden_size": 32, "intermediate_size": 64,
                                                  "num_hidden_layers": 1, "num_attention_heads": 2}}},
        "real_corpus": {
            "sources": [{"name": kind, "kind": kind, "type": "jsonl", "paths": paths}
                        for kind, paths in shards.items()],
            "weights": {"web": 4, "code": 1, "math": 1},
            "max_chars": 2 * input_bytes,
            "min_chars_per_document": 200,
            "max_chars_per_document": 4000,
            "heldout_fraction": 0.01,
            "seed": 0,
        },
        "experiments": {"real_only": {}},
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


# --- one measured run ---------------------------------------------------------------------------------------


def run_stage(config: Path, out: Path, reference_module: Path | None, log: Path) -> tuple[float, float]:
    """Run the stage in a fresh child process; return (wall seconds, peak RSS in MB) of that child."""
    shutil.rmtree(out, ignore_errors=True)
    entry = [str(reference_module)] if reference_module else ["-m", "workflow_scripts.real_corpus"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    with log.open("w") as output:
        child = subprocess.Popen([sys.executable, *entry, "--config", str(config), "--out", str(out)],
                                 stdout=output, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)  # the rusage of this child alone
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"the stage failed (exit {child.returncode}):\n{log.read_text()[-3000:]}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def measure(label: str, reference_module: Path | None, base_bytes: int, scales: list[int],
            work: Path) -> list[dict]:
    rows = []
    for scale in scales:
        corpus = work / f"corpus-{scale}x"
        shards = write_corpus(corpus, base_bytes * scale)
        input_bytes = sum(Path(p).stat().st_size for paths in shards.values() for p in paths)
        config = work / f"config-{scale}x.yaml"
        write_config(config, shards, input_bytes)
        out = work / f"out-{label}-{scale}x"
        wall, peak = run_stage(config, out, reference_module, work / f"log-{label}-{scale}x.txt")
        counts = json.loads((out / "manifest.json").read_text())["counts"]
        output_bytes = sum(f.stat().st_size for f in out.glob("*.parquet"))
        shutil.rmtree(out)
        row = {"implementation": label, "scale": scale, "input_mb": input_bytes / 1e6,
               "output_parquet_mb": output_bytes / 1e6, "documents_read": counts["documents_read"],
               "train_documents": counts["train_documents"], "train_chars": counts["train_chars"],
               "wall_s": wall, "mb_per_s": input_bytes / 1e6 / wall, "peak_rss_mb": peak}
        rows.append(row)
        print(f"  {label:9s} {scale:3d}x  input {row['input_mb']:7.1f} MB  "
              f"{row['documents_read']:7,d} docs read, {row['train_documents']:7,d} in train  "
              f"output {row['output_parquet_mb']:7.1f} MB  {wall:7.1f} s  {row['mb_per_s']:6.2f} MB/s  "
              f"peak RSS {peak:7.0f} MB", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-mb", type=float, default=40, help="JSONL size at scale 1 (default 40 MB)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--reference-module", type=Path, default=None,
                        help="also run this file (another version of workflow_scripts/real_corpus.py)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "benchmarks" / "results" / "real_corpus")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    implementations = [("current", None)]
    if args.reference_module:
        implementations.append(("reference", args.reference_module.resolve()))
    rows = []
    for label, module in implementations:
        rows += measure(label, module, int(args.base_mb * 1e6), args.scales, args.work_dir)
    print()
    for label, _ in implementations:
        mine = [r for r in rows if r["implementation"] == label]
        small, large = mine[0], mine[-1]
        ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
        verdict = "flat" if ratio <= 1.10 else "grows with the corpus"
        print(f"{label:9s} peak RSS {large['scale']}x / {small['scale']}x = {ratio:.2f} "
              f"({verdict}; target <= 1.10), throughput {small['mb_per_s']:.2f} / "
              f"{large['mb_per_s']:.2f} MB/s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
