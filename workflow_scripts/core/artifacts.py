"""The artifact contract: every stage output is a directory that appears complete or not at all.

A stage writes into a hidden temporary sibling directory and renames it into place only after its
``manifest.json`` (written last) is on disk. A crash or SIGKILL therefore leaves at most a ``.tmp-*``
directory, which the next run of the stage removes; never a half-written directory at the real path.

The manifest records what made the artifact: stage, experiment, the resolved parameters and their
hash, content hashes of every input, a hash of the stage's code, package versions, counts, and the size
and content hash of every file. It holds nothing of one run (no timings, no dates): those go to the
untracked sidecar ``<artifact>.run.json``, so an identical rebuild gives byte-identical files. Readers
call :func:`read_manifest` / :func:`require` to refuse artifacts built differently from what they
expect, and :func:`build_artifact` checks every input artifact's files against its manifest
(:func:`verify_files`) before the stage runs, so a truncated, overwritten or bit-flipped file is named
in one line instead of being consumed.
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

from workflow_scripts.core.hashing import (
    canonical_json,
    hash_file,
    hash_file_cached,
    hash_path,
    hash_value,
    known_file_hash,
    remember_file_hash,
)

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
    sizes: dict[str, int] = Field(default_factory=dict, description="relative file -> size in bytes")
    # Older manifests recorded these; new ones leave them to the run sidecar (<artifact>.run.json).
    wall_time_s: float | None = None
    created_utc: str | None = None


RUN_ONLY_FIELDS = {"wall_time_s", "created_utc"}


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

    def __init__(self, path: Path, out_dir: Path | None = None) -> None:
        self.path = path
        self.out_dir = out_dir if out_dir is not None else path
        self.counts: dict[str, float | int] = {}
        self.info: dict[str, Any] = {}
        # Facts of this run only (timings, cache hits, dollars paid now): written beside the artifact,
        # never into its content-hashed files, so an identical rebuild gives identical bytes.
        self.run: dict[str, Any] = {}

    def run_file(self, name: str) -> Path:
        """An untracked file of this run beside the artifact (``<parent>/<artifact>.<name>``), for facts too
        big for ``run`` (per-step timings): not hashed, not published with the artifact."""
        return run_facts_path(self.out_dir, name)


def run_facts_path(out_dir: Path | str, name: str = "run.json") -> Path:
    """The untracked sidecar holding the last build's run facts: ``<parent>/<artifact>.run.json`` (or another
    ``name``: see :meth:`ArtifactBuilder.run_file`)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.{name}"


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

    Every input that is an artifact is first checked against its manifest (:func:`verify_inputs`): a file
    that was truncated, overwritten or corrupted since its stage wrote it stops the stage with one line.
    ``identity`` comes from :func:`workflow_scripts.core.identity.job_identity` (tests may give a bare one).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    verification = verify_inputs(inputs)
    input_hashes = {name: input_hash(Path(p)) for name, p in sorted(inputs.items())}
    tmp = out_dir.parent / f"{TMP_PREFIX}{out_dir.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    builder = ArtifactBuilder(tmp, out_dir)
    started = time.perf_counter()
    try:
        yield builder
        written = sorted(p for p in tmp.rglob("*") if p.is_file())
        files = {p.relative_to(tmp).as_posix(): hash_path(p) for p in written}
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
            files=files,
            sizes={p.relative_to(tmp).as_posix(): p.stat().st_size for p in written},
        )
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2, exclude=RUN_ONLY_FIELDS) + "\n")
        _fsync_tree(tmp)
        # The old artifact is renamed aside, not deleted first: a kill while a large one is being deleted
        # would leave neither; between the two renames there is no time to speak of.
        aside = out_dir.parent / f"{TMP_PREFIX}{out_dir.name}-old-{uuid.uuid4().hex[:8]}"
        if out_dir.exists():
            os.replace(out_dir, aside)
        os.replace(tmp, out_dir)
        shutil.rmtree(aside, ignore_errors=True)
        _remember_hashes(out_dir, files)
        _write_run_facts(out_dir, {"wall_time_s": round(time.perf_counter() - started, 3),
                                   "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                   "input_verification": verification, **builder.run})
        log.info("wrote %s (%s)", out_dir, canonical_json(builder.counts))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remember_hashes(out_dir: Path, files: Mapping[str, str]) -> None:
    """Give the stat cache the hashes just computed for a project artifact, so that the planner's check of
    the unchanged files (:func:`files_match_manifest`) costs a stat each."""
    try:
        Path(out_dir).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return  # outside the project (a test's temporary folder): keep the project's cache small
    for rel, digest in files.items():
        remember_file_hash(out_dir / rel, digest)


def content_id(artifact: Path | str) -> str:
    """Hash of an artifact's files as its manifest lists them: the artifact's content address."""
    return hash_value(read_manifest(artifact).files)


def input_hash(path: Path) -> str:
    """Content hash of an input: an artifact's content id (cheap: read from its manifest) or a file hash."""
    if (path / MANIFEST).is_file():
        return "artifact:" + content_id(path)
    return hash_path(path)


def read_manifest(artifact: Path | str, stage: str | None = None, experiment: str | None = None, *,
                  verify: bool = False) -> Manifest:
    """Read an artifact's manifest; refuse a missing or incomplete artifact, one of another stage, or one
    built for another experiment (an artifact shared by all experiments records none and passes).
    ``verify``: also check its files against the manifest (:func:`verify_files`) before the caller reads
    them."""
    artifact = Path(artifact)
    path = artifact / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{artifact} is not a complete artifact (no {MANIFEST}); rerun the stage that produces it"
        )
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except ValueError as error:
        first = str(error).splitlines()[0]
        raise ArtifactError(f"{path} is not a valid manifest ({first}); rebuild {artifact}") from None
    if stage is not None and manifest.stage != stage:
        raise ArtifactError(f"{artifact} was made by stage {manifest.stage!r}, expected {stage!r}")
    if experiment is not None and manifest.experiment not in (None, experiment):
        raise ArtifactError(f"{artifact} was built for experiment {manifest.experiment!r}, not {experiment!r}")
    if verify:
        cost = verify_files(artifact, manifest)
        if cost["files"]:
            log.info("verified %s: %d files (%.1f MB) in %.2f s", artifact, cost["files"], cost["bytes"] / 1e6,
                     cost["seconds"])
    return manifest


def require(artifact: Path | str, key: str, expected: Any, found: Any) -> None:
    """Raise a clear error when a fact recorded in an artifact differs from what a reader expects."""
    if expected != found:
        raise ArtifactError(
            f"{artifact}: {key} is {found!r} but {expected!r} was expected; "
            "the artifact was built with different settings: rebuild it or fix the configuration"
        )


def _file_problem(artifact: Path, rel: str, manifest: Manifest, file_hash) -> str | None:
    """Why ``rel`` of ``artifact`` differs from its manifest (None when it matches): missing, another size,
    or other content. ``file_hash(path)`` returns the file's hash, or None to skip the content check."""
    file = artifact / rel
    if not file.is_file():
        return f"{file} is listed in {artifact / MANIFEST} but missing"
    size, expected_size = file.stat().st_size, manifest.sizes.get(rel)
    if expected_size is not None and size != expected_size:
        how = "truncated" if size < expected_size else "overwritten or appended to"
        return f"{file} has {size} bytes but its manifest says {expected_size} (the file was {how})"
    digest = file_hash(file)
    if digest is not None and digest != manifest.files[rel]:
        return f"{file} does not match the hash in its manifest (the file was modified or corrupted)"
    return None


_verified: dict[str, str] = {}  # resolved artifact -> what it was verified as, in this process


def _verified_as(artifact: Path, manifest: Manifest) -> str:
    """The manifest's files and their present stats: a file touched since the check is checked again."""
    stats = []
    for rel in sorted(manifest.files):
        try:
            stat = (artifact / rel).stat()
            stats.append((rel, stat.st_size, stat.st_mtime_ns, stat.st_ino))
        except OSError:
            stats.append((rel, None, None, None))
    return hash_value({"files": manifest.files, "stats": stats})


def verify_files(artifact: Path | str, manifest: Manifest | None = None) -> dict[str, float | int]:
    """Check every file an artifact's manifest lists: present, of the recorded size, of the recorded content
    (a streaming sha256 of every byte). Raises :class:`ArtifactError` naming the first file that differs.
    Returns the cost: files and bytes read, seconds. An artifact this process already verified, none of
    whose files changed stat since, is not read again."""
    artifact = Path(artifact)
    manifest = manifest or read_manifest(artifact)
    key, content = str(artifact.resolve()), _verified_as(artifact, manifest)
    if _verified.get(key) == content:
        return {"files": 0, "bytes": 0, "seconds": 0.0}
    started = time.perf_counter()
    size = 0
    for rel in sorted(manifest.files):
        problem = _file_problem(artifact, rel, manifest, hash_file)
        if problem is not None:
            raise ArtifactError(f"{problem}; rebuild {artifact} (snakemake reruns it)")
        size += (artifact / rel).stat().st_size
    _verified[key] = content
    return {"files": len(manifest.files), "bytes": size, "seconds": round(time.perf_counter() - started, 3)}


def verify_inputs(inputs: Mapping[str, Path | str]) -> dict[str, float | int]:
    """:func:`verify_files` for every input that is an artifact; logs and returns the total cost."""
    total: dict[str, float | int] = {"artifacts": 0, "files": 0, "bytes": 0, "seconds": 0.0}
    for path in inputs.values():
        if not (Path(path) / MANIFEST).is_file():
            continue
        cost = verify_files(path)
        total["artifacts"] += 1
        for key in ("files", "bytes", "seconds"):
            total[key] += cost[key]
    total["seconds"] = round(total["seconds"], 3)
    if total["artifacts"]:
        log.info("verified %d files (%.1f MB) of %d input artifacts against their manifests in %.2f s",
                 total["files"], total["bytes"] / 1e6, total["artifacts"], total["seconds"])
    return total


PLAN_HASH_LIMIT = 64 << 20  # the planner re-hashes a changed file up to this size; beyond, it checks the size


def files_match_manifest(artifact: Path | str, manifest: Manifest | None = None) -> str | None:
    """The planner's cheap check of an artifact's files: why they differ from the manifest, or None.

    Every file's presence and size; its content hash from the stat cache when the file's stat is unchanged
    since it was hashed (no read), else by re-hashing it when it is at most :data:`PLAN_HASH_LIMIT` bytes.
    A larger file whose stat changed but whose size did not is left to the reading stage's full check.
    """
    artifact = Path(artifact)
    manifest = manifest or read_manifest(artifact)

    def cheap_hash(file: Path) -> str | None:
        known = known_file_hash(file)
        if known is not None:
            return known
        return hash_file_cached(file) if file.stat().st_size <= PLAN_HASH_LIMIT else None

    for rel in sorted(manifest.files):
        problem = _file_problem(artifact, rel, manifest, cheap_hash)
        if problem is not None:
            return problem
    return None
