"""Every bad input of tests/bad_inputs.py through both front-ends: is it named before any job, is anything lost?

    python benchmarks/bench_validation.py               # all cases: `snakemake -n` and `dvc repro` per case
    python benchmarks/bench_validation.py --dry-runs    # also `dvc repro --dry` and scripts/dvc-repro.sh --dry
    python benchmarks/bench_validation.py --cases "missing topics source" "typo in a key"

It builds a throw-away copy of the project (configs/tiny.yaml without topic extraction) with DVC: the topic
catalog, every experiment's topic sample and the real corpus. Then, per case, it writes the bad configuration
(and its input files) and runs

  - `snakemake -n --configfile bad.yaml`: named when it fails, names the case's key path or file, and plans
    no job;
  - `dvc repro` with the bad configuration as params.yaml: named when it fails at the validate stage (or
    when DVC itself refuses to read params.yaml, as for a repeated key), names the key path or file and runs no
    other stage;

and after each, compares every file under data/ with its bytes before (artifacts lost: any file changed or
gone). It prints one line per case and the counts: bad inputs tried, named before any job, artifacts lost.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bad_inputs import BAD_INPUTS, BadInput  # noqa: E402
from tests.project import REPO, copy_project, run  # noqa: E402

TARGETS = ["real_corpus", "sample_topics--topic_t8_g2", "sample_topics--topic_t16_g2", "sample_topics--persona_t8_g4"]


def build(root: Path) -> Path:
    project = copy_project(root / "project")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("extract_from_corpus: true", "extract_from_corpus: false"))
    run(project, sys.executable, "-m", "workflow_scripts.dvc_yaml")
    run(project, "dvc", "repro", *TARGETS)
    (project / ".venv").symlink_to(REPO / ".venv")
    return project


def artifacts(project: Path) -> dict[str, bytes]:
    return {p.relative_to(project).as_posix(): p.read_bytes() for p in sorted((project / "data").rglob("*"))
            if p.is_file()}


def lost(before: dict[str, bytes], project: Path) -> int:
    after = artifacts(project)
    return sum(1 for name, content in before.items() if after.get(name) != content)


def clean_inputs(project: Path) -> None:
    shutil.rmtree(project / "inputs", ignore_errors=True)
    (project / "bad.yaml").unlink(missing_ok=True)


def try_case(project: Path, case: BadInput, params_text: str, dry_runs: bool) -> dict:
    before = artifacts(project)
    case.write(params_text, project, "bad.yaml")
    snakemake = run(project, "snakemake", "-n", "--configfile", "bad.yaml", check=False)
    output = snakemake.stdout + snakemake.stderr
    row = {"snakemake_named": snakemake.returncode != 0 and case.expected in output
           and "Job stats" not in output and "rule " not in output}
    row["lost_snakemake"] = lost(before, project)
    clean_inputs(project)

    case.write(params_text, project, "params.yaml")
    try:
        dvc = run(project, "dvc", "repro", *TARGETS, check=False)
        output = dvc.stdout + dvc.stderr
        others = [line for line in output.splitlines() if line.startswith("Running stage")
                  and "'validate'" not in line]
        row["dvc_named"] = dvc.returncode != 0 and (case.dvc_expected or case.expected) in output and not others
        row["lost_dvc"] = lost(before, project)
        if dry_runs:
            row["dvc_dry_refused"] = run(project, "dvc", "repro", "--dry", "topics", check=False).returncode != 0
            script = run(project, "bash", "scripts/dvc-repro.sh", "--dry", "topics", check=False)
            row["script_dry_named"] = script.returncode != 0 and case.expected in script.stderr
    finally:
        (project / "params.yaml").write_text(params_text)
        clean_inputs(project)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", help="run only these cases (names in tests/bad_inputs.py)")
    parser.add_argument("--dry-runs", action="store_true",
                        help="also try `dvc repro --dry` (which runs no command) and scripts/dvc-repro.sh --dry")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project (its path is printed)")
    args = parser.parse_args(argv)
    cases = [c for c in BAD_INPUTS if not args.cases or c.name in args.cases]
    root = Path(tempfile.mkdtemp(prefix="bench_validation_"))
    try:
        started = time.perf_counter()
        project = build(root)
        print(f"built {project} in {time.perf_counter() - started:.0f} s; {len(artifacts(project))} files under data/")
        params_text = (project / "params.yaml").read_text()
        rows = []
        for case in cases:
            row = try_case(project, case, params_text, args.dry_runs)
            rows.append(row)
            flags = " ".join(f"{k}={v}" for k, v in row.items())
            print(f"{case.name:45s} {flags}", flush=True)
        print(f"bad inputs tried: {len(rows)}")
        print(f"named before any job: snakemake -n {sum(r['snakemake_named'] for r in rows)}, "
              f"dvc repro {sum(r['dvc_named'] for r in rows)}")
        print(f"artifacts lost (files changed or gone): snakemake {sum(r['lost_snakemake'] for r in rows)}, "
              f"dvc repro {sum(r['lost_dvc'] for r in rows)}")
        if args.dry_runs:
            print(f"dvc repro --dry refused: {sum(r['dvc_dry_refused'] for r in rows)} (it runs no command); "
                  f"scripts/dvc-repro.sh --dry named: {sum(r['script_dry_named'] for r in rows)}")
        ok = all(r["snakemake_named"] and r["dvc_named"] and not r["lost_snakemake"] and not r["lost_dvc"]
                 for r in rows)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
