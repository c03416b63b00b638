"""How long a no-op takes: `snakemake -n` and `dvc status` on an up-to-date default build (target < 3 s).

    python benchmarks/bench_noop.py                # builds the default in a temporary copy first
    python benchmarks/bench_noop.py --project DIR  # times an existing, already built project
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.project import copy_project, run  # noqa: E402


def timed(project: Path, *command: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(project, *command)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="an already built project (default: build one)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        project = args.project
        if project is None:
            project = copy_project(Path(scratch) / "project")
            print("building the default pipeline with `dvc repro` ...", flush=True)
            run(project, "dvc", "repro")
        jobs = len(run(project, "dvc", "stage", "list").stdout.splitlines())
        dry = run(project, "snakemake", "-n")
        if "Nothing to be done" not in dry.stdout + dry.stderr:
            raise SystemExit(f"{project} is not up to date for Snakemake: build it first")
        if "up to date" not in run(project, "dvc", "status").stdout:
            raise SystemExit(f"{project} is not up to date for DVC: `dvc repro` (or `dvc commit`) first")
        snakemake = timed(project, "snakemake", "-n", repeat=args.repeat)
        dvc = timed(project, "dvc", "status", repeat=args.repeat)
        print(f"jobs in the default grid:      {jobs}")
        print(f"no-op `snakemake -n` (median): {snakemake:.2f} s  (target < 3 s)")
        print(f"no-op `dvc status`   (median): {dvc:.2f} s  (target < 3 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
