"""End to end: both front-ends build the default, rerun nothing twice, and rerun exactly what an edit touches.

These run the whole default pipeline (minutes); they are marked slow and still run in CI.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.project import (
    assert_same_deterministic_results,
    copy_built_project,
    dvc_planned_stages,
    edit_yaml_text,
    run,
    snakemake_planned_jobs,
)

pytestmark = pytest.mark.slow

ONE_EXPERIMENT_TOPICS = (
    "topics: 8, generations_per_topic: 2, template: topic,", "topics: 9, generations_per_topic: 2, template: topic,"
)
SHARED_CORPUS_PARAM = ("max_chars: 1500000", "max_chars: 1400000")
LAST_STAGE_ONLY_PARAM = ("row: T=16, column: G=2", "row: T=16 (twice the topics), column: G=2")

EXPERIMENTS = ["real_only", "topic_t8_g2", "topic_t16_g2", "persona_t8_g4"]
SYNTHETIC = EXPERIMENTS[1:]
TRAINING = ["mix", "pretrain", "convert", "sft", "evaluate_pt", "evaluate_sft"]


def jobs(stages: list[str], experiments: list[str]) -> set[str]:
    return {f"{stage}--{experiment}" for stage in stages for experiment in experiments}


AFTER_ONE_EXPERIMENT = (
    jobs(["sample_topics", "generate", "diversity", "tokenize_synthetic", *TRAINING], ["topic_t8_g2"])
    | {"diversity_summary", "report"}
)
AFTER_THE_REAL_CORPUS = (  # topics too: the catalog merges topics an LLM extracted from real pages
    {"real_corpus", "local_models", "topic_extraction", "topics", "tokenize_real", "eval_tasks",
     "diversity_summary", "report"}
    | jobs(["sample_topics", "generate", "diversity", "tokenize_synthetic"], SYNTHETIC) | jobs(TRAINING, EXPERIMENTS)
)

# edit -> (the jobs Snakemake plans, the stages a DVC dry run lists). DVC decides about a downstream
# stage only once its upstream has run and changed content, so its dry run lists the stages whose own
# dependencies changed; test_dvc_reruns_the_same_jobs_as_snakemake runs one edit for real.
# Any edit of params.yaml also lists DVC's validate stage (it checks the whole file; its output does not change).
EXPECTED_RERUNS = {
    "one experiment's topic count": (
        ONE_EXPERIMENT_TOPICS, AFTER_ONE_EXPERIMENT,
        {"validate", "sample_topics--topic_t8_g2", "generate--topic_t8_g2", "report"}),
    "a shared corpus parameter": (SHARED_CORPUS_PARAM, AFTER_THE_REAL_CORPUS, {"validate", "real_corpus"}),
    "a parameter only the last stage reads": (LAST_STAGE_ONLY_PARAM, {"report"}, {"validate", "report"}),
}


def _artifact_files(project: Path) -> dict[str, dict[str, str]]:
    return {manifest.parent.relative_to(project).as_posix(): json.loads(manifest.read_text())["files"]
            for manifest in sorted((project / "data").rglob("manifest.json"))}


def test_snakemake_second_run_is_a_no_op(snakemake_build):
    assert snakemake_planned_jobs(snakemake_build) == set()
    assert "Nothing to be done" in run(snakemake_build, "snakemake", "--cores", "2").stderr


def test_dvc_second_run_is_a_no_op(dvc_build):
    assert "Data and pipelines are up to date" in run(dvc_build, "dvc", "status").stdout
    assert dvc_planned_stages(dvc_build) == set()


def test_both_front_ends_build_the_same_artifacts(snakemake_build, dvc_build):
    assert_same_deterministic_results(snakemake_build, dvc_build)
    assert set(_artifact_files(snakemake_build)) == set(_artifact_files(dvc_build))


@pytest.mark.parametrize("edit", list(EXPECTED_RERUNS))
def test_an_edit_reruns_exactly_the_dependent_jobs(snakemake_build, dvc_build, edit):
    (old, new), by_snakemake, by_dvc_dry_run = EXPECTED_RERUNS[edit]
    for project, planned, expected in ((snakemake_build, snakemake_planned_jobs, by_snakemake),
                                       (dvc_build, dvc_planned_stages, by_dvc_dry_run)):
        params = project / "params.yaml"
        original = params.read_text()
        try:
            edit_yaml_text(params, old, new)
            assert planned(project) == expected, f"{edit} in {project.name}"
        finally:
            params.write_text(original)


def test_dvc_reruns_the_same_jobs_as_snakemake(dvc_build, tmp_path):
    project = copy_built_project(dvc_build, tmp_path / "copy")
    (old, new), by_snakemake, _ = EXPECTED_RERUNS["one experiment's topic count"]
    edit_yaml_text(project / "params.yaml", old, new)
    output = run(project, "dvc", "repro").stdout
    assert set(re.findall(r"Running stage '([^']+)'", output)) == by_snakemake | {"validate"}


def test_editing_a_stage_s_code_reruns_that_stage_and_its_dependents(snakemake_build):  # reverted below
    code = snakemake_build / "workflow_scripts" / "real_corpus.py"
    original = code.read_text()
    try:
        code.write_text(original + "\n# a change\n")
        assert snakemake_planned_jobs(snakemake_build) == AFTER_THE_REAL_CORPUS
    finally:
        code.write_text(original)


def test_share_through_a_dvc_remote_then_fresh_clone_has_nothing_to_do(dvc_build, tmp_path):
    dvc_build = copy_built_project(dvc_build, tmp_path / "build")
    remote = tmp_path / "remote"
    run(dvc_build, "dvc", "remote", "add", "-d", "shared", str(remote))
    run(dvc_build, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    run(dvc_build, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results")
    run(dvc_build, "dvc", "push")

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(dvc_build), str(clone))
    run(clone, "dvc", "config", "--local", "core.site_cache_dir", str(clone / ".cache" / "dvc-site"))
    run(clone, "dvc", "pull")
    assert "Data and pipelines are up to date" in run(clone, "dvc", "status").stdout
    assert snakemake_planned_jobs(clone) == set()
    assert _artifact_files(clone) == _artifact_files(dvc_build)
    # Snakemake has no metadata in the clone; an edit must still rerun what it touches.
    edit_yaml_text(clone / "params.yaml", *ONE_EXPERIMENT_TOPICS)
    assert snakemake_planned_jobs(clone) == AFTER_ONE_EXPERIMENT


def test_caches_stay_inside_the_project(snakemake_build):
    for outside in (Path("/var/tmp/dvc"),):
        if outside.exists():
            shutil.rmtree(outside, ignore_errors=True)
    run(snakemake_build, "dvc", "status")
    run(snakemake_build, "snakemake", "-n")
    assert (snakemake_build / ".cache" / "snakemake").is_dir()
    assert not Path("/var/tmp/dvc").exists()


def test_default_reports_say_their_models_are_tiny_and_random(snakemake_build):
    report = (snakemake_build / "data" / "report" / "report.md").read_text()
    summary = (snakemake_build / "data" / "diversity" / "summary" / "summary.md").read_text()
    for text in (report, summary):
        assert "tiny" in text and "randomly initialised" in text
    assert "say nothing about the paper's findings" in report and "the paper's science" in summary
    assert "a tiny randomly initialised model built here (its outputs are noise)" in report  # the Models line
    assert (snakemake_build / "data" / "report" / "figures" / "figure1_accuracy_vs_cluster_agent.png").is_file()
    tables = snakemake_build / "data" / "report" / "tables"
    assert {p.suffix for p in tables.iterdir()} >= {".md", ".csv", ".tex"}


@pytest.mark.parametrize("build", ["snakemake_build", "dvc_build"])
def test_every_artifact_records_the_plan_it_was_built_from(build, request):
    """Each manifest holds its job's fingerprint and its inputs' content ids: what rebuild decisions read."""
    from workflow_scripts.config import load_config
    from workflow_scripts.pipeline import artifact_is_current, plan

    project = request.getfixturevalue(build)
    config = load_config(project / "params.yaml")
    with contextlib.chdir(project):  # the plan's paths are relative to the project
        stale = [job.name for job in plan(config) if not artifact_is_current(job)]
    assert stale == []


def test_dvc_metrics_and_plots_show_the_report(dvc_build, tmp_path):
    metrics = run(dvc_build, "dvc", "metrics", "show", "--json").stdout
    assert "correlation" in metrics and "mean" in metrics
    run(dvc_build, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "accuracy_vs_cluster_agent" in page and "loss" in page


def test_every_stage_records_the_identity_the_planner_computes(snakemake_build):
    """The identity a stage process computed from its row and its inputs' manifests is the planner's."""
    from workflow_scripts.config import load_config
    from workflow_scripts.core.artifacts import read_manifest
    from workflow_scripts.core.identity import code_hash, stage_params
    from workflow_scripts.core.stages import STAGES
    from workflow_scripts.pipeline import plan

    config = load_config(snakemake_build / "params.yaml")
    with contextlib.chdir(snakemake_build):
        jobs = plan(config)
        recorded = {job.name: read_manifest(job.out) for job in jobs}
    for job in jobs:
        manifest = recorded[job.name]
        assert (manifest.stage, manifest.experiment) == (job.stage, job.experiment), job.name
        assert manifest.fingerprint == job.fingerprint, job.name
        assert manifest.code_hash == code_hash(STAGES[job.stage].code), job.name
        assert manifest.params == stage_params(config, job.stage, job.experiment), job.name


def test_after_snakemake_dvc_status_is_clean_without_a_manual_commit(snakemake_build):
    assert "Data and pipelines are up to date" in run(snakemake_build, "dvc", "status").stdout
