"""The artifact contract: atomic publication, a manifest that explains the artifact, checked readers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_scripts.core.artifacts import (
    MANIFEST,
    ArtifactError,
    JobIdentity,
    build_artifact,
    read_manifest,
    files_match_manifest,
    read_run_facts,
    require,
    verify_files,
)
from workflow_scripts.core.hashing import hash_path


def _publish(out: Path, inputs: dict, body=lambda p: (p / "data.txt").write_text("hello")) -> None:
    with build_artifact(out, identity=JobIdentity(stage="demo", experiment="e1", params={"k": 1}), inputs=inputs) as artifact:
        body(artifact.path)
        artifact.counts["rows"] = 1


def test_manifest_records_what_made_the_artifact(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("input")
    _publish(tmp_path / "out", {"source": source})
    manifest = read_manifest(tmp_path / "out", stage="demo")
    assert manifest.experiment == "e1" and manifest.params == {"k": 1}
    assert manifest.inputs == {"source": hash_path(source)}
    assert manifest.counts == {"rows": 1} and manifest.sizes == {"data.txt": 5}
    assert manifest.wall_time_s is None and "wall_time_s" not in (tmp_path / "out" / MANIFEST).read_text()
    assert read_run_facts(tmp_path / "out")["wall_time_s"] >= 0
    assert "torch" in manifest.packages and "python" in manifest.packages
    assert set(manifest.files) == {"data.txt"}
    verify_files(tmp_path / "out")


def test_failed_stage_leaves_nothing(tmp_path):
    def explode(path: Path) -> None:
        (path / "partial.txt").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _publish(tmp_path / "out", {}, explode)
    assert list(tmp_path.iterdir()) == []


def test_readers_refuse_incomplete_or_foreign_artifacts(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ArtifactError, match="not a complete artifact"):
        read_manifest(tmp_path / "half")
    _publish(tmp_path / "out", {})
    with pytest.raises(ArtifactError, match="made by stage 'demo', expected 'topics'"):
        read_manifest(tmp_path / "out", stage="topics")
    with pytest.raises(ArtifactError, match="vocab_size is 100 but 200 was expected"):
        require(tmp_path / "out", "vocab_size", 200, 100)
    (tmp_path / "out" / "data.txt").write_text("jello")  # same size, other bytes
    with pytest.raises(ArtifactError, match="does not match the hash"):
        verify_files(tmp_path / "out")


def test_an_identical_rebuild_gives_identical_bytes(tmp_path):
    _publish(tmp_path / "a", {})
    _publish(tmp_path / "b", {})
    assert (tmp_path / "a" / MANIFEST).read_bytes() == (tmp_path / "b" / MANIFEST).read_bytes()


def test_old_manifests_with_timings_still_read(tmp_path):
    _publish(tmp_path / "out", {})
    manifest_file = tmp_path / "out" / MANIFEST
    old = json.loads(manifest_file.read_text())
    del old["sizes"]
    manifest_file.write_text(json.dumps({**old, "wall_time_s": 1.5, "created_utc": "2026-01-01T00:00:00+00:00"}))
    assert read_manifest(tmp_path / "out").wall_time_s == 1.5
    verify_files(tmp_path / "out")


def test_a_garbled_manifest_is_named_in_one_line(tmp_path):
    _publish(tmp_path / "out", {})
    (tmp_path / "out" / MANIFEST).write_text("{\"stage\": 3")
    with pytest.raises(ArtifactError, match=r"manifest.json is not a valid manifest") as error:
        read_manifest(tmp_path / "out")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("damage, found", [
    (lambda f: f.write_bytes(f.read_bytes()[:-2]), "has 3 bytes but its manifest says 5 (the file was truncated)"),
    (lambda f: f.write_bytes(f.read_bytes() + b"!"), "has 6 bytes but its manifest says 5 (the file was overwritten or appended to)"),
    (lambda f: f.write_bytes(b"jello"), "does not match the hash in its manifest"),
    (lambda f: f.unlink(), "is listed in .* but missing"),
])
def test_a_stage_refuses_an_input_artifact_that_changed_since_it_was_built(tmp_path, damage, found):
    _publish(tmp_path / "up", {})
    damage(tmp_path / "up" / "data.txt")
    assert files_match_manifest(tmp_path / "up") is not None  # the planner sees it too
    with pytest.raises(ArtifactError, match=re.escape(found).replace(r"\.\*", ".*")) as error:
        _publish(tmp_path / "down", {"up": tmp_path / "up"})
    assert str(tmp_path / "up" / "data.txt") in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "down").exists()


def test_input_verification_cost_goes_to_the_run_sidecar(tmp_path):
    _publish(tmp_path / "up", {})
    _publish(tmp_path / "down", {"up": tmp_path / "up"})
    cost = read_run_facts(tmp_path / "down")["input_verification"]
    assert cost["artifacts"] == 1 and cost["files"] == 1 and cost["bytes"] == 5 and cost["seconds"] >= 0
    assert files_match_manifest(tmp_path / "up") is None


SLOW_STAGE = """
import sys, time
from pathlib import Path
from workflow_scripts.core.artifacts import JobIdentity, build_artifact
with build_artifact(Path(sys.argv[1]), identity=JobIdentity(stage="demo"), inputs={}) as artifact:
    with open(artifact.path / "big.txt", "w") as handle:
        for i in range(10_000):
            handle.write("x" * 1000 + "\\n")
            handle.flush()
            if i == 100:
                print("writing", flush=True)
            time.sleep(0.001)
"""


def test_sigkill_mid_write_leaves_no_complete_looking_output_and_rerun_succeeds(tmp_path):
    out = tmp_path / "artifact"
    process = subprocess.Popen([sys.executable, "-c", SLOW_STAGE, str(out)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "a killed stage must not leave its output at the real path"
    leftovers = list(tmp_path.glob(".tmp-artifact-*"))
    assert leftovers and not (leftovers[0] / MANIFEST).exists()

    _publish(out, {})
    assert (out / MANIFEST).is_file()
    assert not list(tmp_path.glob(".tmp-artifact-*")), "the rerun cleans what the killed run left"
    assert json.loads((out / MANIFEST).read_text())["stage"] == "demo"
