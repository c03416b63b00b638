"""Wall time of the default pipeline (the real SmolLM2 model) per stage, and its LLM throughput.

    python benchmarks/bench_default.py                  # runs `snakemake --cores 2` in a fresh copy, then reports
    python benchmarks/bench_default.py --project DIR    # reports on an existing build (reads its manifests)

Target (issue: a real model in the default): the whole default in at most 15 minutes on 2 cores. Per stage it
prints the jobs, the sum of their wall times (jobs of one stage may overlap when Snakemake runs two at once),
and for the LLM stages the backend's output tokens per second (completion tokens / backend seconds of the
jobs that called the model) and the share of schema-valid answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.project import copy_project, run  # noqa: E402


def manifests(project: Path) -> list[dict]:
    """Every artifact's manifest, with its run sidecar (``<artifact>.run.json``: timings) as ``run``."""
    found = []
    for path in sorted((project / "data").rglob("manifest.json")):
        sidecar = path.parent.with_name(f"{path.parent.name}.run.json")
        found.append({**json.loads(path.read_text()),
                      "run": json.loads(sidecar.read_text()) if sidecar.is_file() else {}})
    return found


def job_times(project: Path) -> dict[str, list[float]]:
    """rule -> wall seconds of each job, from Snakemake's newest log (start and finish timestamps)."""
    logs = sorted((project / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return {}
    stamp, rule, started, times = None, None, {}, defaultdict(list)
    for line in logs[-1].read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            try:
                stamp = datetime.strptime(" ".join(line[1:-1].split()), "%a %b %d %H:%M:%S %Y")
            except ValueError:
                pass
        elif line.endswith(":") and line.split()[0] in ("rule", "localrule"):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("jobid:") and rule is not None:
            started[line.split()[1]] = (rule, stamp)
            rule = None
        elif line.startswith("Finished jobid:"):
            job = line.split()[2]
            if job in started and stamp is not None and started[job][1] is not None:
                times[started[job][0]].append((stamp - started[job][1]).total_seconds())
    return times


def llm_figures(found: list[dict]) -> dict[str, tuple[int, float]]:
    """stage -> (completion tokens, backend seconds) over the jobs that called the model."""
    figures: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for manifest in found:
        facts = {**manifest.get("counts", {}), **manifest["run"]}
        if manifest["stage"] == "generate" and facts.get("backend_seconds"):
            figures["generate"][0] += facts["backend_completion_tokens"]
            figures["generate"][1] += facts["backend_seconds"]
        cache = manifest["run"].get("judge_cache") or {}
        if cache.get("backend_seconds"):
            figures["diversity (judge)"][0] += cache["backend_completion_tokens"]
            figures["diversity (judge)"][1] += cache["backend_seconds"]
    return {stage: (int(tokens), seconds) for stage, (tokens, seconds) in figures.items()}


def report(project: Path, total_s: float | None) -> None:
    found = manifests(project)
    per_stage = job_times(project)
    if not per_stage:  # no Snakemake log: the stages' own timings (training stages count only publishing)
        for manifest in found:
            per_stage[manifest["stage"]].append(float(manifest["run"].get("wall_time_s") or 0.0))
    per_stage.pop("all", None)
    print(f"{'stage':<20} {'jobs':>4} {'wall s (sum)':>13}")
    for stage, times in sorted(per_stage.items(), key=lambda item: -sum(item[1])):
        print(f"{stage:<20} {len(times):>4} {sum(times):>13.1f}")
    print()
    for stage, (tokens, seconds) in llm_figures(found).items():
        print(f"{stage}: {tokens} completion tokens in {seconds:.1f} s of backend time = {tokens / seconds:.1f} tokens/s")
    for manifest in found:
        counts = manifest.get("counts", {})
        if manifest["stage"] == "diversity":
            rates = {k: counts[k] for k in counts if k.endswith("_rate")}
            print(f"schema-valid {manifest['experiment']}: {rates}")
    if total_s is not None:
        print(f"\ntotal wall time: {total_s:.0f} s ({total_s / 60:.1f} min; target <= 15 min)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=None, help="an already built project to report on")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    args = parser.parse_args(argv)
    if args.project is not None:
        report(args.project, None)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-default-") as tmp:
        project = copy_project(Path(tmp) / "project", config=None)  # the default params.yaml, real model
        started = time.perf_counter()
        run(project, "snakemake", "--cores", str(args.cores))
        report(project, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
