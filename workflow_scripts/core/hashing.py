"""Content hashes for files, directories, JSON-able values and the code of a stage.

Hashes are sha256 hex digests. They depend on content and relative names only, never on absolute
paths, mtimes or worker counts, so a moved or re-pulled artifact keeps its identity.
"""

from __future__ import annotations

import hashlib
import json
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


def hash_code(paths: Iterable[Path]) -> str:
    """Hash of a stage's source files or packages (contents and relative names, not locations)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        for file in iter_files(path):
            name = file.relative_to(path.parent).as_posix()
            digest.update(name.encode() + b"\0" + hash_file(file).encode() + b"\n")
    return digest.hexdigest()
