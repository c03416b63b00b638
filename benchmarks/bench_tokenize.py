"""Benchmark: the tokenization stage vs bare `tokenizers` batch encoding, and the stage's peak memory.

For each corpus size (default 50 MB and 200 MB of text) the script

1. generates a deterministic corpus of Parquet shards (web-like prose, code-like and math-like documents
   from a seeded generator; the 50 MB corpus is a prefix of the 200 MB one),
2. trains a byte-level BPE tokenizer on its first documents
   (``workflow_scripts.local_models.train_tokenizer``),
3. runs the stage code (``workflow_scripts.tokenization.stage.tokenize_parts``: Parquet streaming, worker
   processes, .bin/.idx writing, manifest with content hashes) in a child process while sampling the memory of
   the child and its workers (sum of RSS, sampled every 50 ms), and
4. in another child process, times the bare ``Tokenizer.encode_batch`` and ``encode_batch_fast`` (Rust
   threads on all cores, ``TOKENIZERS_PARALLELISM=true``) on the same texts, read beforehand, in chunks of
   about 4 MB so that the Encoding objects fit in memory; only the encode calls are timed.

It prints MB/s (million characters of text per second), tokens/s, the ratio of the stage's rate to the faster
bare rate (target >= 0.9) and the stage's peak memory (target < 1 GB, independent of corpus size).

Usage: python benchmarks/bench_tokenize.py [--sizes-mb 50 200] [--repeats 2] [--workers N]
       [--vocab-size 16384] [--work-dir benchmarks/results/tokenize] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARD_MB = 32
ROW_GROUP_DOCS = 4096
SEED = 20241015


# --- corpus -------------------------------------------------------------------------------------------------


def _lexicon(rng, size: int) -> list[str]:
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "ru",
        "ta",
        "shi",
        "po",
        "an",
        "er",
        "in",
        "on",
        "th",
        "st",
        "qu",
        "zo",
        "be",
        "de",
        "ar",
        "el",
        "is",
        "or",
        "un",
        "ve",
        "wa",
        "yo",
        "gr",
        "pl",
        "tr",
        "ch",
    ]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables, int(rng.integers(1, 5)))))
    return sorted(words)


def generate_documents(target_chars: int, seed: int = SEED):
    """Yield documents until ``target_chars`` characters; same seed -> same documents (a prefix for less)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lexicon = _lexicon(rng, 30_000)
    ranks = np.arange(1, len(lexicon) + 1)
    zipf = (1 / ranks) / (1 / ranks).sum()
    identifiers = lexicon[:2000]
    produced = 0
    while produced < target_chars:
        kinds = rng.choice(3, size=256, p=[4 / 6, 1 / 6, 1 / 6])
        lengths = rng.integers(80, 1200, size=256)
        words = rng.choice(len(lexicon), size=int(lengths.sum()), p=zipf).tolist()
        numbers = rng.integers(0, 10_000, size=int(lengths.sum())).tolist()
        start = 0
        for kind, length in zip(kinds.tolist(), lengths.tolist()):
            ids, nums = words[start : start + length], numbers[start : start + length]
            start += length
            if kind == 0:  # prose: sentences of 8-20 words, capitalised, with some numbers
                parts, i = [], 0
                while i < length:
                    n = 8 + (ids[i] % 13)
                    sentence = [lexicon[w] for w in ids[i : i + n]]
                    if nums[i] % 5 == 0:
                        sentence.insert(len(sentence) // 2, str(nums[i]))
                    parts.append(" ".join(sentence).capitalize() + (". " if nums[i] % 7 else ", "))
                    i += n
                text = "".join(parts).strip()
            elif kind == 1:  # code-like lines
                lines = []
                for i in range(0, length, 6):
                    a, b, c = (identifiers[ids[min(i + k, length - 1)] % len(identifiers)] for k in range(3))
                    lines.append(f"{'    ' * (nums[i] % 3)}{a}_{b} = {c}({nums[i]}, '{lexicon[ids[i]]}')")
                text = "def " + identifiers[ids[0] % len(identifiers)] + "():\n" + "\n".join(lines)
            else:  # math-like: statements with numbers and operators
                terms = [f"{lexicon[w]} = {n} * x^{n % 4} + {n // 7}" for w, n in zip(ids[::4], nums[::4])]
                text = "Let " + "; ".join(terms) + ". Then the sum is " + str(sum(nums[::4])) + "."
            produced += len(text)
            yield text
            if produced >= target_chars:
                return


def write_corpus(folder: Path, size_mb: int) -> tuple[Path, int, int]:
    """Shards of ~SHARD_MB MB under ``folder`` (reused when complete); returns (folder, docs, chars)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = folder / "DONE.json"
    if done.is_file():
        facts = json.loads(done.read_text())
        return folder, facts["documents"], facts["chars"]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    shard, writer, shard_chars, batch, docs, chars = 0, None, 0, [], 0, 0

    def flush():
        nonlocal batch, writer
        if batch:
            writer.write_table(pa.table({"text": batch}))
            batch = []

    for text in generate_documents(size_mb * 1_000_000):
        if writer is None:
            writer = pq.ParquetWriter(
                folder / f"shard-{shard:05d}.parquet", pa.schema([("text", pa.string())])
            )
        batch.append(text)
        docs, chars, shard_chars = docs + 1, chars + len(text), shard_chars + len(text)
        if len(batch) >= ROW_GROUP_DOCS:
            flush()
        if shard_chars >= SHARD_MB * 1_000_000:
            flush()
            writer.close()
            writer, shard, shard_chars = None, shard + 1, 0
    flush()
    if writer is not None:
        writer.close()
    done.write_text(json.dumps({"documents": docs, "chars": chars}))
    return folder, docs, chars


def train_benchmark_tokenizer(corpus: Path, out: Path, vocab_size: int) -> Path:
    if (out / "tokenizer.json").is_file():
        return out
    from workflow_scripts.config import TokenizerSpec
    from workflow_scripts.local_models import train_tokenizer

    tokenizer = train_tokenizer(
        generate_documents(8_000_000),
        TokenizerSpec(vocab_size=vocab_size, min_frequency=2, max_training_chars=8_000_000),
    )
    tokenizer.save_pretrained(out)
    return out


# --- child processes ----------------------------------------------------------------------------------------


def child_stage(args: argparse.Namespace) -> None:
    """Run the stage code exactly as the pipeline does (minus config loading) and print its counts."""
    import shutil

    from workflow_scripts.core.artifacts import JobIdentity, read_manifest, read_run_facts
    from workflow_scripts.tokenization.stage import Part, input_files, tokenize_parts

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    tokenize_parts(
        [Part(input_files(Path(args.input)), name="corpus")],
        out,
        tokenizer=args.tokenizer,
        identity=JobIdentity(stage="tokenize", params={"tokenize": {"tokenizer": args.tokenizer}}),
        workers=args.workers,
    )
    wall = time.perf_counter() - started
    counts, run = read_manifest(out).counts, read_run_facts(out)  # timings: in the run sidecar
    print(
        json.dumps(
            {
                "chars": counts["chars"],
                "tokens": counts["tokens"],
                "documents": counts["documents"],
                "seconds": run["encode_seconds"],
                "cpu_seconds": run["encode_cpu_seconds"],
                "wall_seconds": wall,
            }
        )
    )


def child_bare(args: argparse.Namespace) -> None:
    """Time bare Rust batch encoding (all cores) of the same texts; reading is not timed."""
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))
    results = {}
    for method in ("encode_batch", "encode_batch_fast"):
        encode = getattr(tokenizer, method)
        seconds, cpu, chars, tokens = 0.0, 0.0, 0, 0
        for file in sorted(Path(args.input).glob("*.parquet")):
            parquet = pq.ParquetFile(file)
            chunk, chunk_chars = [], 0
            for batch in parquet.iter_batches(batch_size=1024, columns=["text"]):
                for text in batch.column(0).to_pylist():
                    chunk.append(text)
                    chunk_chars += len(text)
                    if chunk_chars >= 4_000_000:
                        t0, c0 = time.perf_counter(), time.process_time()
                        encodings = encode(chunk, add_special_tokens=False)
                        seconds += time.perf_counter() - t0
                        cpu += time.process_time() - c0
                        tokens += sum(len(e) for e in encodings) + len(chunk)  # + one EOD each, as the stage
                        chars += chunk_chars
                        chunk, chunk_chars, encodings = [], 0, None
            if chunk:
                t0, c0 = time.perf_counter(), time.process_time()
                encodings = encode(chunk, add_special_tokens=False)
                seconds += time.perf_counter() - t0
                cpu += time.process_time() - c0
                tokens += sum(len(e) for e in encodings) + len(chunk)
                chars += chunk_chars
        results[method] = {"chars": chars, "tokens": tokens, "seconds": seconds, "cpu_seconds": cpu}
    print(json.dumps(results))


def run_child(mode: str, extra: list[str], sample_memory: bool) -> tuple[dict, float]:
    """Run this script in ``mode``; return its JSON answer and the peak RSS (MB) of it plus its children."""
    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, __file__, mode, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(process.pid)
        while not stop.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                total = 0
                for proc in tree:
                    try:
                        total += proc.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                peak = max(peak, total / 1e6)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        sampler.start()
    out, err = process.communicate()
    stop.set()
    if process.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak


def summarise(size: int, docs: int, chars: int, workers: int, bare: dict, stage: dict, peak: float) -> dict:
    best = max(bare.values(), key=lambda r: r["chars"] / r["seconds"])
    best_cpu = max(bare.values(), key=lambda r: r["chars"] / r["cpu_seconds"])
    row = {
        "size_mb": size,
        "documents": docs,
        "chars": chars,
        "workers": workers,
        "stage_mb_s": stage["chars"] / 1e6 / stage["seconds"],
        "stage_tokens_s": stage["tokens"] / stage["seconds"],
        "stage_wall_mb_s": stage["chars"] / 1e6 / stage["wall_seconds"],
        "stage_mb_per_cpu_s": stage["chars"] / 1e6 / stage["cpu_seconds"],
        "bare_encode_batch_mb_s": bare["encode_batch"]["chars"] / 1e6 / bare["encode_batch"]["seconds"],
        "bare_encode_batch_fast_mb_s": bare["encode_batch_fast"]["chars"]
        / 1e6
        / bare["encode_batch_fast"]["seconds"],
        "bare_mb_s": best["chars"] / 1e6 / best["seconds"],
        "bare_tokens_s": best["tokens"] / best["seconds"],
        "bare_mb_per_cpu_s": best_cpu["chars"] / 1e6 / best_cpu["cpu_seconds"],
        "tokens_match": stage["tokens"] == best["tokens"],
        "stage_peak_rss_mb": float(peak),
        "load_average": float(os.getloadavg()[0]),
    }
    row["ratio"] = row["stage_mb_s"] / row["bare_mb_s"]
    row["cpu_ratio"] = row["stage_mb_per_cpu_s"] / row["bare_mb_per_cpu_s"]
    return row


def report(row: dict, workers: int, label: str) -> None:
    print(f"  {label}: load average {row['load_average']:.2f}")
    print(f"    bare encode_batch       {row['bare_encode_batch_mb_s']:7.2f} MB/s")
    print(f"    bare encode_batch_fast  {row['bare_encode_batch_fast_mb_s']:7.2f} MB/s")
    print(
        f"    best bare               {row['bare_mb_s']:7.2f} MB/s   {row['bare_tokens_s']:,.0f} tokens/s   "
        f"{row['bare_mb_per_cpu_s']:.2f} MB per CPU-second"
    )
    print(
        f"    stage ({workers} workers)       {row['stage_mb_s']:7.2f} MB/s   "
        f"{row['stage_tokens_s']:,.0f} tokens/s   "
        f"{row['stage_mb_per_cpu_s']:.2f} MB per CPU-second (main + workers, start-up included)"
    )
    print(
        f"    stage end to end        {row['stage_wall_mb_s']:7.2f} MB/s   "
        "(tokenizer loading, input/output hashing, "
        "manifest)"
    )
    print(f"    ratio stage / bare      {row['ratio']:7.3f}   wall clock (target >= 0.9)")
    print(f"    CPU-time ratio          {row['cpu_ratio']:7.3f}")
    print(
        f"    stage peak memory       {row['stage_peak_rss_mb']:7.0f} MB RSS, main + workers "
        "(target < 1000 MB)"
    )
    print(f"    same token count as bare: {row['tokens_match']}")


# --- main ---------------------------------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("--child-stage", "--child-bare"):
        mode = sys.argv[1]
        child = argparse.ArgumentParser()
        child.add_argument("--input")
        child.add_argument("--tokenizer")
        child.add_argument("--out")
        child.add_argument("--workers", type=int, default=None)
        args = child.parse_args(sys.argv[2:])
        (child_stage if mode == "--child-stage" else child_bare)(args)
        return 0

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--work-dir", type=Path, default=REPO / "benchmarks" / "results" / "tokenize")
    parser.add_argument(
        "--repeats", type=int, default=2, help="rounds of (bare, stage) per size; medians reported"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import numpy  # noqa: F401  (fail early when run outside the environment)

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared machine: rates vary)"
    )
    tokenizer = train_benchmark_tokenizer(work, work / "tokenizer", args.vocab_size)
    rows = []
    for size in args.sizes_mb:
        t0 = time.perf_counter()
        corpus, docs, chars = write_corpus(work / f"corpus-{size}mb", size)
        print(
            f"\ncorpus {size} MB: {docs:,} documents, {chars / 1e6:.1f} M characters "
            f"(generated/reused in {time.perf_counter() - t0:.1f} s)"
        )
        rounds = []
        for repeat in range(args.repeats):  # alternate bare / stage so that load changes hit both
            bare, _ = run_child(
                "--child-bare", ["--input", str(corpus), "--tokenizer", str(tokenizer)], False
            )
            stage, peak = run_child(
                "--child-stage",
                [
                    "--input",
                    str(corpus),
                    "--tokenizer",
                    str(tokenizer),
                    "--out",
                    str(work / f"tokens-{size}mb"),
                    "--workers",
                    str(args.workers),
                ],
                True,
            )
            rounds.append(summarise(size, docs, chars, args.workers, bare, stage, peak))
            report(rounds[-1], args.workers, f"round {repeat + 1}/{args.repeats}")
        row = {
            key: statistics.median(r[key] for r in rounds)
            if isinstance(rounds[0][key], float)
            else rounds[0][key]
            for key in rounds[0]
        }
        row["stage_peak_rss_mb"] = max(r["stage_peak_rss_mb"] for r in rounds)
        row["rounds"] = rounds
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(
        "\nmedians over rounds (wall-clock rates depend on what else runs on this shared machine; "
        "the CPU-time"
    )
    print("ratio compares the work each needs per megabyte and does not)")
    print("size_mb  stage_MB/s  bare_MB/s  ratio  stage_tok/s  bare_tok/s  cpu_ratio  peak_MB")
    for row in rows:
        print(
            f"{row['size_mb']:7d}  {row['stage_mb_s']:10.2f}  {row['bare_mb_s']:9.2f}  {row['ratio']:5.3f}  "
            f"{row['stage_tokens_s']:11,.0f}  {row['bare_tokens_s']:10,.0f}  {row['cpu_ratio']:9.3f}  "
            f"{row['stage_peak_rss_mb']:7.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
