"""Validation before anything runs: every bad configuration or input file is refused when Snakemake or DVC plans,
with its key path or file named, and neither front-end starts a job or deletes an output for it."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.bad_inputs import BAD_INPUTS, BadInput, case
from tests.project import REPO, copy_built_project, copy_project, environment, run
from workflow_scripts import validate
from workflow_scripts.config import ConfigError, parse_config
from workflow_scripts.dvc_yaml import VALIDATE
from workflow_scripts.pipeline import plan

TINY = (REPO / "configs" / "tiny.yaml").read_text()


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.name for b in BAD_INPUTS])
def test_the_planner_refuses_every_bad_input_naming_the_key_or_file(bad: BadInput, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cases' input paths are relative to the project, as in a config
    bad.write(TINY, tmp_path)
    with pytest.raises(ConfigError) as caught:
        validate.validate("bad.yaml")
    message = str(caught.value)
    assert bad.expected in message
    assert message.startswith("invalid configuration") or message.startswith("configuration file bad.yaml")


def test_the_shipped_configurations_validate_and_the_command_says_so(tmp_path):
    config, jobs = validate.validate(REPO / "configs" / "tiny.yaml")
    assert jobs and config.experiments
    out = tmp_path / "validated" / "config.json"
    assert validate.main(["--config", str(REPO / "params.yaml"), "--out", str(out)]) == 0
    first = out.read_bytes()
    assert validate.main(["--config", str(REPO / "params.yaml"), "--out", str(out)]) == 0
    assert out.read_bytes() == first  # the same bytes every time: passing it reruns no DVC stage by itself


def test_the_validate_command_prints_the_problems_and_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    case("missing topics source").write(TINY, tmp_path)
    assert validate.main(["--config", "bad.yaml", "--out", "validated.json"]) == 2
    assert "topics.sources.1: topic file inputs/missing.json does not exist" in capsys.readouterr().err
    assert not (tmp_path / "validated.json").exists()


def test_input_checks_can_be_relaxed_to_warnings_for_planning_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case("missing topics source").write(TINY, tmp_path)
    monkeypatch.setenv(validate.INPUT_CHECKS, "warn")
    assert validate.validate("bad.yaml")[1]
    case("typo in a key").write(TINY, tmp_path)
    with pytest.raises(ConfigError):  # only the input checks relax
        validate.validate("bad.yaml")


def test_kmeans_refuses_more_clusters_than_texts_instead_of_clamping():
    import numpy as np

    from workflow_scripts.core.artifacts import InputError
    from workflow_scripts.diversity.kmeans import kmeans_score

    with pytest.raises(InputError, match=r"kmeans_k \(5\) is more than the 4 texts"):
        kmeans_score(np.eye(4), k=5)


def test_commands_quote_paths_with_spaces():
    raw = yaml.safe_load(TINY)
    raw["data_root"] = "my data"
    for job in plan(parse_config(raw), "my params.yaml"):
        words = shlex.split(job.cmd)
        assert words[words.index("--out") + 1] == job.out and job.out.startswith("my data/")
        assert words[words.index("--config") + 1] == "my params.yaml"


def test_dvc_yaml_validates_first_and_keeps_every_output_in_place():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    first, *others = stages
    assert first == VALIDATE and stages[VALIDATE]["cmd"].startswith("python -m workflow_scripts.validate")
    assert {"params.yaml", "workflow_scripts/config", "workflow_scripts/resources/topics.json"} <= set(
        stages[VALIDATE]["deps"])
    for name in others:
        assert stages[name]["deps"][0] == "data/validated/config.json", name
    assert all(out[path] == {"persist": True} for stage in stages.values() for out in stage["outs"] for path in out)


# --- the front-ends, in copies of the project -------------------------------------------------------------


@pytest.fixture(scope="module")
def snakemake_project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("plan"))


@pytest.mark.parametrize("name", ["typo in a key", "missing topics source", "topics file holding {}"])
def test_snakemake_dry_run_fails_on_one_line_per_problem_before_any_job(snakemake_project, name):
    project = snakemake_project
    case(name).write(TINY, project, "bad.yaml")
    result = run(project, "snakemake", "-n", "--configfile", "bad.yaml", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and case(name).expected in output
    assert "rule " not in output and "Job stats" not in output and "Traceback" not in output


TOPICS_ONLY = ("extract_from_corpus: true", "extract_from_corpus: false")  # the catalog then needs no LLM


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """A copy whose topic catalog and samples DVC built (a few seconds: no LLM, no training)."""
    project = copy_project(tmp_path_factory.mktemp("dvc"))
    params = project / "params.yaml"
    params.write_text(params.read_text().replace(*TOPICS_ONLY))
    run(project, "python", "-m", "workflow_scripts.dvc_yaml")
    run(project, "dvc", "repro", "sample_topics--topic_t8_g2")
    return project


def data_files(project: Path) -> dict[str, bytes]:
    return {p.relative_to(project).as_posix(): p.read_bytes() for p in sorted((project / "data").rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("name", ["typo in a key", "missing topics source"])
def test_dvc_repro_with_a_bad_input_stops_at_validate_and_keeps_every_output(dvc_project, tmp_path, name):
    project = copy_built_project(dvc_project, tmp_path / "p")
    before = data_files(project)
    assert "data/topics/catalog/topics.parquet" in before
    text = (project / "params.yaml").read_text()
    case(name).write(text, project, "params.yaml")
    result = run(project, "dvc", "repro", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and case(name).expected in output
    assert "failed to reproduce 'validate'" in output and "Running stage 'topics'" not in output
    assert data_files(project) == before


def test_dvc_dry_run_cannot_validate_and_the_front_door_script_does(dvc_project, tmp_path):
    """`dvc repro --dry` runs no command, so it lists the validate stage instead of failing (documented);
    scripts/dvc-repro.sh validates first."""
    project = copy_built_project(dvc_project, tmp_path / "p")
    (project / ".venv").symlink_to(REPO / ".venv")
    case("typo in a key").write((project / "params.yaml").read_text(), project, "params.yaml")
    dry = run(project, "dvc", "repro", "--dry", "topics", check=False)
    assert dry.returncode == 0 and f"Running stage '{VALIDATE}'" in dry.stdout
    script = run(project, "bash", "scripts/dvc-repro.sh", "--dry", "topics", check=False)
    assert script.returncode != 0 and case("typo in a key").expected in script.stderr
    assert "Running stage" not in script.stdout


@pytest.mark.slow
def test_a_kill_during_dvc_repro_keeps_the_old_artifact(dvc_project, tmp_path):
    """DVC deletes a stage's output before running it unless the output is persistent; ours are, and a stage
    replaces its artifact only once the new one is complete."""
    project = copy_built_project(dvc_project, tmp_path / "p")
    before = data_files(project)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("near_duplicate_threshold: 0.85", "near_duplicate_threshold: 0.8"))
    repro = subprocess.Popen(["dvc", "repro", "topics"], cwd=project, env=environment(project),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    topics = project / "data" / "topics"
    deadline = time.monotonic() + 120
    while not list(topics.glob(".tmp-catalog-*")) and repro.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    caught_mid_write = bool(list(topics.glob(".tmp-catalog-*")))
    os.killpg(repro.pid, signal.SIGKILL)
    repro.wait()
    assert caught_mid_write, "the topics stage finished before it could be killed"
    after = data_files(project)
    assert {k: v for k, v in after.items() if k.startswith("data/topics/catalog/")} == {
        k: v for k, v in before.items() if k.startswith("data/topics/catalog/")}


@pytest.mark.slow
def test_a_data_root_with_a_space_runs_under_both_front_ends(tmp_path):
    project = copy_project(tmp_path / "p")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("data_root: data", "data_root: my data").replace(*TOPICS_ONLY))
    run(project, "python", "-m", "workflow_scripts.dvc_yaml")
    run(project, "snakemake", "--cores", "1", "my data/topics/catalog")
    assert (project / "my data" / "topics" / "catalog" / "manifest.json").is_file()
    run(project, "dvc", "repro", "sample_topics--topic_t8_g2")
    assert (project / "my data" / "topics" / "samples" / "topic_t8_g2" / "manifest.json").is_file()


def test_a_changed_input_file_changes_the_fingerprints_of_the_jobs_that_read_it(tmp_path, monkeypatch):
    """External files are dependencies: topic files of the catalog, a persona file of every generate job."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inputs").mkdir()
    topics, personas = tmp_path / "inputs" / "topics.json", tmp_path / "inputs" / "personas.jsonl"
    topics.write_text('{"Science/Physics/Optics": ["lens", "light", "mirror"]}\n')
    personas.write_text('{"persona": "a lighthouse keeper"}\n')
    raw = yaml.safe_load(TINY)
    raw["topics"]["sources"] = ["builtin", "inputs/topics.json"]
    raw["generate"]["prompts"]["personas_path"] = "inputs/personas.jsonl"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))

    def fingerprints() -> dict[str, str]:
        return {job.name: job.fingerprint for job in validate.validate("mine.yaml")[1]}

    before = fingerprints()
    jobs = {job.name: job for job in validate.validate("mine.yaml")[1]}
    assert "inputs/topics.json" in jobs["topics"].deps and "inputs/personas.jsonl" in jobs["generate--topic_t8_g2"].deps
    personas.write_text('{"persona": "a retired astronaut"}\n')
    changed = {name for name, value in fingerprints().items() if value != before[name]}
    assert {"generate--topic_t8_g2", "report"} <= changed and "topics" not in changed
    topics.write_text('{"Science/Physics/Optics": ["lens", "light", "prism"]}\n')
    assert fingerprints()["topics"] != before["topics"]
