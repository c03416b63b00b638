"""Throw-away copies of this project for end-to-end tests of Snakemake and DVC."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IGNORED_DIRS = {".git", ".venv", ".cache", "data", "logs", ".snakemake", "__pycache__", ".pytest_cache",
                ".ruff_cache", "workflow_scripts.egg-info"}


def environment(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", XDG_CACHE_HOME=str(project / ".cache"),
        DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(project),
    )
    return env


def run(project: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=project, env=environment(project), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _project_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode == 0:
        return [REPO / line for line in listed.stdout.splitlines() if (REPO / line).is_file()]
    return [p for p in REPO.rglob("*") if p.is_file() and not IGNORED_DIRS.intersection(p.relative_to(REPO).parts)]


TEST_CONFIG = "configs/tiny.yaml"


def copy_project(destination: Path, config: str | None = TEST_CONFIG) -> Path:
    """The working tree (tracked and untracked, not ignored files) as a fresh git + DVC repository.

    ``config`` (default: the all-random tiny configuration, fast) becomes the copy's params.yaml, with its
    dvc.yaml generated for it; None keeps the default params.yaml (the real builtin model, slow)."""
    for file in _project_files():
        target = destination / file.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    if config is not None:
        shutil.copy2(REPO / config, destination / "params.yaml")
        run(destination, sys.executable, "-m", "workflow_scripts.dvc_yaml")
    run(destination, "git", "init", "-q")
    run(destination, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    run(destination, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy")
    run(destination, "dvc", "config", "--local", "core.site_cache_dir", str(destination / ".cache" / "dvc-site"))
    return destination


# Stages whose artifact is a pure function of its inputs and parameters, compared across two builds. LLM
# generation is not (an answer depends slightly on which requests share its batch, which depends on the cache
# and on job order). Every artifact is byte-identical when rebuilt from the same inputs in the same project
# (tests/test_integrity.py); the training stages are left out here only because the two builds' jobs run with
# other neighbours.
DETERMINISTIC_STAGES = {"topics", "sample_topics", "real_corpus", "local_models", "tokenize_real",
                        "tokenize_synthetic", "mix", "eval_tasks"}


def deterministic_artifacts(project: Path) -> dict[str, tuple[dict, dict]]:
    """artifact -> (its inputs' content ids, its files' hashes), for artifacts of deterministic stages."""
    found = {}
    for manifest_file in sorted((project / "data").rglob("manifest.json")):
        manifest = json.loads(manifest_file.read_text())
        if manifest["stage"] in DETERMINISTIC_STAGES:
            found[manifest_file.parent.relative_to(project).as_posix()] = (manifest["inputs"], manifest["files"])
    return found


def assert_same_deterministic_results(first: Path, second: Path) -> None:
    """Where two builds fed a deterministic stage the same inputs, its outputs are identical."""
    a, b = deterministic_artifacts(first), deterministic_artifacts(second)
    assert set(a) == set(b) and len(a) >= 10, (sorted(a), sorted(b))
    compared = [name for name in a if a[name][0] == b[name][0]]
    assert len(compared) >= 6, f"too few artifacts with identical inputs to compare: {compared}"
    for name in compared:
        assert a[name][1] == b[name][1], f"{name}: same inputs, different outputs"


def copy_built_project(built: Path, destination: Path) -> Path:
    """A private copy of a built project (data, DVC cache and Snakemake state included)."""
    shutil.copytree(built, destination, symlinks=True)
    run(destination, "dvc", "config", "--local", "core.site_cache_dir", str(destination / ".cache" / "dvc-site"))
    return destination


def snakemake_planned_jobs(project: Path, *extra: str) -> set[str]:
    """Job names (``stage`` or ``stage--experiment``) a dry run would execute."""
    result = run(project, "snakemake", "-n", *extra)
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return set()
    assert "Job stats" in output, f"unexpected dry-run output:\n{output}"
    jobs = set()
    for block in output.split("\n\n"):
        rule = re.search(r"^rule (\w+):", block, re.M)
        if not rule or rule.group(1) == "all":
            continue
        experiment = re.search(r"wildcards: experiment=([\w-]+)", block)
        jobs.add(rule.group(1) + (f"--{experiment.group(1)}" if experiment else ""))
    return jobs


def snakemake_job_specs(project: Path) -> dict[str, dict]:
    """For every job of a forced dry run: its inputs, output and shell command, parsed from Snakemake."""
    output = run(project, "snakemake", "-n", "--forceall").stdout
    specs = {}
    for block in re.split(r"\n(?=\[)", output):
        rule = re.search(r"^rule (\w+):", block, re.M)
        if not rule or rule.group(1) == "all":
            continue
        experiment = re.search(r"wildcards: experiment=([\w-]+)", block)
        name = rule.group(1) + (f"--{experiment.group(1)}" if experiment else "")
        inputs = re.search(r"^\s+input: (.*)$", block, re.M)
        specs[name] = {
            "inputs": set(inputs.group(1).split(", ")) if inputs else set(),
            "output": re.search(r"^\s+output: (.*)$", block, re.M).group(1),
            "shell": re.search(r"^Shell command: (.*)$", block, re.M).group(1),
        }
    return specs


def dvc_planned_stages(project: Path) -> set[str]:
    result = run(project, "dvc", "repro", "--dry")
    output = result.stdout + result.stderr
    assert "Running stage" in output or "didn't change, skipping" in output, output
    return set(re.findall(r"Running stage '([^']+)'", output))


def edit_yaml_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} must occur exactly once in {path}"
    path.write_text(text.replace(old, new))
