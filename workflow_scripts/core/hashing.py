"""Content hashes for files, directories, JSON-able values and the code of a stage.

Hashes are sha256 hex digests. They depend on content and relative names only, never on absolute
paths, mtimes or worker counts, so a moved or re-pulled artifact keeps its identity.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

CHUNK = 1 << 20


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_value(value: Any) -> str:
    return hash_bytes(canonical_json(value).encode())


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iter_files(path: Path) -> list[Path]:
    """Files under ``path`` in a stable order (``path`` itself if it is a file)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def hash_path(path: Path, exclude: Iterable[str] = ()) -> str:
    """Hash of a file, or of a directory's relative file names and contents."""
    path = Path(path)
    if path.is_file():
        return hash_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot hash {path}: no such file or directory")
    excluded = set(exclude)
    digest = hashlib.sha256()
    for file in iter_files(path):
        rel = file.relative_to(path).as_posix()
        if rel in excluded:
            continue
        digest.update(rel.encode() + b"\0" + hash_file(file).encode() + b"\n")
    return digest.hexdigest()


# --- a stat cache, as DVC keeps one: a file is re-hashed only when its (path, size, mtime, inode) changes ---

STAT_CACHE = Path(".cache") / "workflow_scripts" / "file-hashes.json"
_stat_hashes: dict[str, str] | None = None
_stat_dirty = False


def _stat_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"


def _load_stat_cache() -> dict[str, str]:
    global _stat_hashes
    if _stat_hashes is None:
        try:
            _stat_hashes = json.loads(STAT_CACHE.read_text())
        except (OSError, ValueError):
            _stat_hashes = {}
    return _stat_hashes


def hash_file_cached(path: Path) -> str:
    """:func:`hash_file`, remembered by the file's stat so that an unchanged file is read only once."""
    global _stat_dirty
    hashes, key = _load_stat_cache(), _stat_key(path)
    if key not in hashes:
        hashes[key] = hash_file(path)
        _stat_dirty = True
    return hashes[key]


def known_file_hash(path: Path) -> str | None:
    """The stat cache's hash of ``path`` when its (path, size, mtime, inode) is unchanged, else None (no I/O
    beyond a stat)."""
    return _load_stat_cache().get(_stat_key(path))


def remember_file_hash(path: Path, digest: str) -> None:
    """Tell the stat cache a hash just computed (for example of a file a stage wrote), so that checks of
    the unchanged file cost a stat only."""
    global _stat_dirty
    _load_stat_cache()[_stat_key(path)] = digest
    _stat_dirty = True


def hash_path_cached(path: Path) -> str:
    """:func:`hash_path` through the stat cache (same value)."""
    path = Path(path)
    if path.is_file():
        return hash_file_cached(path)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot hash {path}: no such file or directory")
    digest = hashlib.sha256()
    for file in iter_files(path):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + hash_file_cached(file).encode() + b"\n")
    return digest.hexdigest()


def save_stat_cache() -> None:
    """Write the stat cache if it learnt anything (atomically; a lost race only costs a re-hash)."""
    global _stat_dirty
    if not _stat_dirty or _stat_hashes is None:
        return
    try:
        STAT_CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = STAT_CACHE.with_name(f"{STAT_CACHE.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_stat_hashes))
        os.replace(tmp, STAT_CACHE)
        _stat_dirty = False
    except OSError:
        pass


atexit.register(save_stat_cache)
