"""Benchmark of the request cache (workflow_scripts/llm/cache.py) on the file system of --dir.

Writes N records (a 300-character prompt, a 1,500-character answer) in groups of 1,000, then reports: the time
to open the cache with the records in shards and, after `compact`, in one pack; cached lookups per second in
batches of 1,024; the cost of a batch of misses; claims and releases per second. Run it with --dir on the shared
file system the jobs use (NFS, Lustre) to see its figures there.

    .venv/bin/python benchmarks/bench_cache.py [--records 100000] [--dir /shared/tmp]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from workflow_scripts.llm.cache import RequestCache, compact, request_key
from workflow_scripts.llm.types import LLMRequest, LLMResponse


def _lookups(directory: Path, keys: list[str], label: str) -> dict[str, float]:
    started = time.perf_counter()
    cache = RequestCache(directory, claims=False)
    opened = time.perf_counter() - started
    sample = random.Random(0).sample(keys, min(20_000, len(keys)))
    started = time.perf_counter()
    for start in range(0, len(sample), 1024):
        assert len(cache.get_many(sample[start:start + 1024])) == len(sample[start:start + 1024])
    hits = len(sample) / (time.perf_counter() - started)
    misses = [request_key("absent", LLMRequest(messages=[{"role": "user", "content": str(i)}])) for i in range(1024)]
    started = time.perf_counter()
    cache.get_many(misses)
    miss_batch = time.perf_counter() - started
    cache.close()
    return {f"{label}_open_s": round(opened, 3), f"{label}_hits_per_s": round(hits),
            f"{label}_1024_misses_s": round(miss_batch, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the cache (default: a temp dir)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=args.dir))
    try:
        requests = [LLMRequest(messages=[{"role": "user", "content": f"topic {i} " + "x" * 300}], seed=i)
                    for i in range(args.records)]
        keys = [request_key("bench", r) for r in requests]
        answer = LLMResponse(text="y" * 1500, prompt_tokens=100, completion_tokens=400)
        started = time.perf_counter()
        with RequestCache(directory) as cache:
            for start in range(0, args.records, 1000):
                cache.put_many([(keys[i], "bench", requests[i], answer)
                                for i in range(start, min(start + 1000, args.records))])
        figures: dict[str, float] = {"records": args.records,
                                     "write_s": round(time.perf_counter() - started, 2),
                                     "bytes": sum(p.stat().st_size for p in directory.rglob("*.jsonl"))}
        figures |= _lookups(directory, keys, "shards")
        started = time.perf_counter()
        compact(directory)
        figures["compact_s"] = round(time.perf_counter() - started, 2)
        figures |= _lookups(directory, keys, "pack")
        with RequestCache(directory) as cache:
            claim_keys = [request_key("claims", r) for r in requests[:2000]]
            started = time.perf_counter()
            assert len(cache.try_claim_many(claim_keys)) == len(claim_keys)
            figures["claims_per_s"] = round(len(claim_keys) / (time.perf_counter() - started))
            started = time.perf_counter()
            cache.release_many(claim_keys)
            figures["releases_per_s"] = round(len(claim_keys) / (time.perf_counter() - started))
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
