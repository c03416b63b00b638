"""Nothing silently wrong: the planner sees an artifact whose files changed, and an identical rebuild gives the
same bytes, so that deleting one manifest settles in one `snakemake` run.

The fast tests use a hand-made artifact; the slow ones share the session's built project (copied).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from workflow_scripts.core.artifacts import MANIFEST, JobIdentity, build_artifact, files_match_manifest
from workflow_scripts.pipeline import Job, artifact_is_current


def _job(out: Path, fingerprint: str = "fp") -> Job:
    return Job(stage="demo", experiment=None, cmd="true", inputs={}, deps=(), params=(), out=str(out),
               log="demo.log", fingerprint=fingerprint)


def _publish(out: Path) -> None:
    with build_artifact(out, identity=JobIdentity(stage="demo", fingerprint="fp"), inputs={}) as artifact:
        (artifact.path / "tokens.bin").write_bytes(bytes(range(256)) * 4)
        (artifact.path / "notes.txt").write_text("hello")


@pytest.mark.parametrize("damage", [
    lambda d: (d / "tokens.bin").write_bytes((d / "tokens.bin").read_bytes()[:-10]),    # truncated
    lambda d: (d / "tokens.bin").write_bytes(b"\xff" + (d / "tokens.bin").read_bytes()[1:]),  # same size
    lambda d: (d / "notes.txt").unlink(),                                                 # gone
])
def test_the_planner_treats_an_artifact_whose_files_changed_as_stale(tmp_path, damage):
    _publish(tmp_path / "out")
    assert artifact_is_current(_job(tmp_path / "out"))
    damage(tmp_path / "out")
    assert files_match_manifest(tmp_path / "out") is not None
    assert not artifact_is_current(_job(tmp_path / "out"))


def test_the_planner_reads_no_data_for_an_unchanged_artifact_it_has_seen(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # inside the "project": the writer tells the stat cache its hashes
    _publish(Path("out"))
    import workflow_scripts.core.artifacts as artifacts

    def no_reading(path):
        raise AssertionError(f"{path} was re-hashed")

    monkeypatch.setattr(artifacts, "hash_file_cached", no_reading)
    assert artifact_is_current(_job(Path("out")))


# --- whole pipeline (slow): share the built project ------------------------------------------------------


def _artifact_bytes(project: Path) -> dict[str, str]:
    """Every artifact -> sha256 of its manifest.json (which lists the hash of every file)."""
    return {path.parent.relative_to(project).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted((project / "data").rglob(MANIFEST))}


@pytest.mark.slow
def test_snakemake_plans_a_rerun_for_an_artifact_with_a_modified_file(snakemake_build, tmp_path):
    from tests.project import copy_built_project, snakemake_planned_jobs

    project = copy_built_project(snakemake_build, tmp_path / "project")
    assert snakemake_planned_jobs(project) == set()
    token_file = project / "data" / "tokens" / "real" / "web.bin"
    original = token_file.read_bytes()
    token_file.write_bytes(original[:-2])  # truncated
    assert "tokenize_real" in snakemake_planned_jobs(project)
    token_file.write_bytes(original[2:] + original[:2])  # same size, other tokens
    assert "tokenize_real" in snakemake_planned_jobs(project)
    token_file.write_bytes(original)
    assert snakemake_planned_jobs(project) == set()


@pytest.mark.slow
def test_rebuilding_gives_byte_identical_artifacts_and_a_deleted_manifest_settles_in_one_run(
        snakemake_build, tmp_path):
    from tests.project import copy_built_project, run, snakemake_planned_jobs

    project = copy_built_project(snakemake_build, tmp_path / "project")
    before = _artifact_bytes(project)
    # a mix (so its pretraining reruns), a diversity score and an evaluation: rebuilt from the same inputs
    for artifact in ("data/mixes/topic_t8_g2", "data/diversity/topic_t8_g2", "data/eval/pt/real_only",
                     "data/tokens/synthetic/persona_t8_g4"):
        (project / artifact / MANIFEST).unlink()
    run(project, "snakemake", "--cores", "2")
    assert snakemake_planned_jobs(project) == set(), "a second run still had work to do"
    after = _artifact_bytes(project)
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not changed, f"rebuilt from identical inputs, different bytes: {changed}"
