"""How long a no-op takes: `snakemake -n` and `dvc status` on an up-to-date default build (target <= 1.0 s).

    python benchmarks/bench_noop.py                      # builds the default in a temporary copy first
    python benchmarks/bench_noop.py --project DIR        # times an existing, already built project
    python benchmarks/bench_noop.py --baseline 43ddac1   # also builds that commit and prints the ratio

With ``--baseline REV`` both trees are built and timed in the same run, alternating, so that the ratio
compares like with like on a shared machine.

It also times each tool's own floor in the same run: `snakemake -n` on a Snakefile of as many trivial jobs, and
`dvc status` on as many one-file stages that each track one key of the same params.yaml (DVC parses the params
file once per stage). What the project adds is the difference to these.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.project import REPO, TEST_CONFIG, copy_project, run  # noqa: E402


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
        # the configuration copy_project gives this tree, so that both trees plan the same grid
        shutil.copy2(destination / TEST_CONFIG, destination / "params.yaml")
        run(destination, sys.executable, "-m", "workflow_scripts.dvc_yaml")
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


def floor_projects(destination: Path, jobs: int, params: Path) -> dict[str, Path]:
    """Trivial workflows of ``jobs`` jobs, built: what Snakemake and DVC cost before any project code runs."""
    snakemake_floor, dvc_floor = destination / "snakemake", destination / "dvc"
    snakemake_floor.mkdir(parents=True)
    (snakemake_floor / "Snakefile").write_text(
        f'rule all:\n    input: expand("out/{{i}}.txt", i=range({jobs}))\n\n'
        'rule touch:\n    output: "out/{i}.txt"\n    shell: "touch {output}"\n')
    run(snakemake_floor, "snakemake", "--cores", "1", "--quiet")
    dvc_floor.mkdir(parents=True)
    shutil.copy2(params, dvc_floor / "params.yaml")
    stages = {f"s{i}": {"cmd": f"echo {i} > out{i}.txt", "params": ["seed"], "outs": [f"out{i}.txt"]}
              for i in range(jobs)}
    (dvc_floor / "dvc.yaml").write_text(json.dumps({"stages": stages}))  # JSON is YAML
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
        run(dvc_floor, *command)
    return {"snakemake": snakemake_floor, "dvc": dvc_floor}


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
        jobs = len(run(projects["this tree"], "dvc", "stage", "list").stdout.splitlines())
        floors = floor_projects(Path(scratch) / "floor", jobs, projects["this tree"] / "params.yaml")
        times: dict[str, dict[str, list[float]]] = {name: {"snakemake": [], "dvc": []}
                                                    for name in [*projects, "floor"]}
        for _ in range(args.repeat):  # alternate, so that load on a shared machine hits all alike
            for name, project in projects.items():
                times[name]["snakemake"].append(timed(project, "snakemake", "-n", repeat=1))
                times[name]["dvc"].append(timed(project, "dvc", "status", repeat=1))
            times["floor"]["snakemake"].append(timed(floors["snakemake"], "snakemake", "-n", repeat=1))
            times["floor"]["dvc"].append(timed(floors["dvc"], "dvc", "status", repeat=1))
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
            floor = statistics.median(times["floor"][command])
            line += f"   {command}'s own floor for {jobs} trivial jobs: {floor:.2f} s (project adds {ours - floor:+.2f} s)"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
