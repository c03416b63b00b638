"""How long a no-op takes: `snakemake -n` and `dvc status` on an up-to-date default build (target <= 1.0 s).

    python benchmarks/bench_noop.py                      # builds the default in a temporary copy first
    python benchmarks/bench_noop.py --project DIR        # times an existing, already built project
    python benchmarks/bench_noop.py --baseline 43ddac1   # also builds that commit and prints the ratio

With ``--baseline REV`` both trees are built and timed in the same run, alternating, so that the ratio
compares like with like on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.project import REPO, copy_project, run  # noqa: E402


def timed(project: Path, *command: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(project, *command)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def built_copy(destination: Path, revision: str | None) -> Path:
    """A copy of this project (or of ``revision``), built with `dvc repro` and checked up to date."""
    if revision is None:
        project = copy_project(destination)
    else:
        destination.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", revision], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "x", "-C", str(destination)], input=archive, check=True)
        for command in (["git", "init", "-q"], ["git", "add", "-A"],
                        ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", revision]):
            subprocess.run(command, cwd=destination, check=True, capture_output=True)
        project = destination
    print(f"building {revision or 'this tree'} with `dvc repro` ...", flush=True)
    run(project, "dvc", "repro")
    check_up_to_date(project)
    return project


def check_up_to_date(project: Path) -> None:
    dry = run(project, "snakemake", "-n")
    if "Nothing to be done" not in dry.stdout + dry.stderr:
        raise SystemExit(f"{project} is not up to date for Snakemake: build it first")
    if "up to date" not in run(project, "dvc", "status").stdout:
        raise SystemExit(f"{project} is not up to date for DVC: `dvc repro` (or `dvc commit`) first")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="an already built project (default: build one)")
    parser.add_argument("--baseline", help="a git revision to build and time in the same run (ratio)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        projects = {"this tree": args.project or built_copy(Path(scratch) / "project", None)}
        if args.project is not None:
            check_up_to_date(args.project)
        if args.baseline:
            projects[args.baseline] = built_copy(Path(scratch) / "baseline", args.baseline)
        times: dict[str, dict[str, list[float]]] = {name: {"snakemake": [], "dvc": []} for name in projects}
        for _ in range(args.repeat):  # alternate, so that load on a shared machine hits both alike
            for name, project in projects.items():
                times[name]["snakemake"].append(timed(project, "snakemake", "-n", repeat=1))
                times[name]["dvc"].append(timed(project, "dvc", "status", repeat=1))
        jobs = len(run(projects["this tree"], "dvc", "stage", "list").stdout.splitlines())
        print(f"jobs in the default grid: {jobs}; median of {args.repeat} runs (target <= 1.0 s)")
        if importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None:
            print("note: the SLURM executor plugin is installed (install.sh --slurm): Snakemake imports it, and "
                  "pandas with it, on every start (~0.5 s); a plain `bash scripts/install.sh` leaves it out")
        for command, label in (("snakemake", "snakemake -n"), ("dvc", "dvc status  ")):
            ours = statistics.median(times["this tree"][command])
            line = f"no-op `{label}`: {ours:.2f} s"
            if args.baseline:
                base = statistics.median(times[args.baseline][command])
                line += f"   {args.baseline}: {base:.2f} s   ratio {ours / base:.2f}"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
