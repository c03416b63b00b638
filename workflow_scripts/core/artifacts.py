"""The artifact contract: every stage output is a directory that appears complete or not at all.

A stage writes into a hidden temporary sibling directory and renames it into place only after its
``manifest.json`` (written last) is on disk. A crash or SIGKILL therefore leaves at most a ``.tmp-*``
directory, which the next run of the stage removes; never a half-written directory at the real path.

The manifest records what made the artifact: stage, experiment, the resolved parameters and their
hash, content hashes of every input, a hash of the stage's code, package versions, counts and wall
time. Readers call :func:`read_manifest` / :func:`require` to refuse artifacts built differently
from what they expect.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import BaseModel, ConfigDict, Field

from workflow_scripts.core.hashing import canonical_json, hash_path, hash_value

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
TRACKED_PACKAGES = (
    "workflow_scripts", "torch", "transformers", "tokenizers", "polars", "pyarrow", "megatron-core",
    "lm_eval", "outlines", "pydantic", "snakemake", "dvc",
)

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete, or was built differently from what a reader expects."""


class InputError(ValueError):
    """Input data a stage was given is malformed; the message names the file and what is wrong."""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    experiment: str | None = None
    params: dict[str, Any]
    params_hash: str
    fingerprint: str = Field("", description="the job's fingerprint (see core/identity.py)")
    inputs: dict[str, str] = Field(description="input name -> content hash")
    code_hash: str
    packages: dict[str, str]
    counts: dict[str, float | int] = {}
    info: dict[str, Any] = Field(default_factory=dict, description="stage-specific facts readers check")
    files: dict[str, str] = Field(default_factory=dict, description="relative file -> content hash")
    wall_time_s: float
    created_utc: str


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class JobIdentity:
    """What a stage records in its manifest about what made the artifact."""

    stage: str
    experiment: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    code_hash: str = ""
    fingerprint: str = ""


class ArtifactBuilder:
    """Handle given to a stage while it writes: ``path`` is the temporary directory to fill."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: dict[str, float | int] = {}
        self.info: dict[str, Any] = {}
        # Facts of this run only (timings, cache hits, dollars paid now): written beside the artifact,
        # never into its content-hashed files, so an identical rebuild gives identical bytes.
        self.run: dict[str, Any] = {}


def run_facts_path(out_dir: Path | str) -> Path:
    """The untracked sidecar holding the last build's run facts: ``<parent>/<name>.run.json``."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.run.json"


def read_run_facts(out_dir: Path | str) -> dict[str, Any]:
    path = run_facts_path(out_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_run_facts(out_dir: Path, facts: dict[str, Any]) -> None:
    path = run_facts_path(out_dir)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    tmp.write_text(json.dumps(facts, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def remove_stale_temporaries(out_dir: Path) -> None:
    for stale in out_dir.parent.glob(f"{TMP_PREFIX}{out_dir.name}-*"):
        log.warning("removing %s left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


@contextmanager
def build_artifact(
    out_dir: Path | str,
    *,
    identity: JobIdentity,
    inputs: Mapping[str, Path | str],
) -> Iterator[ArtifactBuilder]:
    """Yield a builder whose ``path`` the stage fills; publish it atomically with a manifest.

    ``identity`` comes from :func:`workflow_scripts.core.identity.job_identity` (tests may give a bare one).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    input_hashes = {name: input_hash(Path(p)) for name, p in sorted(inputs.items())}
    tmp = out_dir.parent / f"{TMP_PREFIX}{out_dir.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    builder = ArtifactBuilder(tmp)
    started = time.perf_counter()
    try:
        yield builder
        manifest = Manifest(
            stage=identity.stage,
            experiment=identity.experiment,
            params=identity.params,
            params_hash=hash_value(identity.params),
            fingerprint=identity.fingerprint,
            inputs=input_hashes,
            code_hash=identity.code_hash,
            packages=package_versions(),
            counts=builder.counts,
            info=builder.info,
            files={p.relative_to(tmp).as_posix(): hash_path(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
            wall_time_s=round(time.perf_counter() - started, 3),
            created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
        _fsync_tree(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        _write_run_facts(out_dir, {"wall_time_s": round(time.perf_counter() - started, 3),
                                   "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                   **builder.run})
        log.info("wrote %s (%s)", out_dir, canonical_json(builder.counts))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def content_id(artifact: Path | str) -> str:
    """Hash of an artifact's files as its manifest lists them: the artifact's content address."""
    return hash_value(read_manifest(artifact).files)


def input_hash(path: Path) -> str:
    """Content hash of an input: an artifact's content id (cheap: read from its manifest) or a file hash."""
    if (path / MANIFEST).is_file():
        return "artifact:" + content_id(path)
    return hash_path(path)


def read_manifest(artifact: Path | str, stage: str | None = None, experiment: str | None = None) -> Manifest:
    """Read an artifact's manifest; refuse a missing or incomplete artifact, one of another stage, or one
    built for another experiment (an artifact shared by all experiments records none and passes)."""
    artifact = Path(artifact)
    path = artifact / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{artifact} is not a complete artifact (no {MANIFEST}); rerun the stage that produces it"
        )
    manifest = Manifest.model_validate_json(path.read_text())
    if stage is not None and manifest.stage != stage:
        raise ArtifactError(f"{artifact} was made by stage {manifest.stage!r}, expected {stage!r}")
    if experiment is not None and manifest.experiment not in (None, experiment):
        raise ArtifactError(f"{artifact} was built for experiment {manifest.experiment!r}, not {experiment!r}")
    return manifest


def require(artifact: Path | str, key: str, expected: Any, found: Any) -> None:
    """Raise a clear error when a fact recorded in an artifact differs from what a reader expects."""
    if expected != found:
        raise ArtifactError(
            f"{artifact}: {key} is {found!r} but {expected!r} was expected; "
            "the artifact was built with different settings: rebuild it or fix the configuration"
        )


def verify_files(artifact: Path | str) -> None:
    """Check every file listed in the manifest against its recorded hash (detects edits and truncation)."""
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    for rel, digest in manifest.files.items():
        file = artifact / rel
        if not file.is_file():
            raise ArtifactError(f"{artifact}: {rel} listed in the manifest is missing")
        if hash_path(file) != digest:
            raise ArtifactError(f"{artifact}: {rel} does not match the hash in its manifest")
