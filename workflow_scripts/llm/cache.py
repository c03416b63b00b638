"""A content-addressed cache of LLM requests, shared by every experiment and every stage.

Key: sha256 of (backend identity incl. model revision, full messages, decoding parameters, JSON schema,
seed). Storage: one SQLite database in WAL mode with ``synchronous=FULL``; each batch of responses is one
transaction, so a process killed with SIGKILL loses at most the batch in flight and never leaves a
partial record; ``INSERT OR IGNORE`` on the primary key means a record is never duplicated, even when
two experiments run at once against the same cache (SQLite serialises the writers). Use a local or
lock-capable filesystem: SQLite's WAL mode is not safe on NFS.

Responses that failed for a transient reason (HTTP errors after all retries) are never stored; invalid
or truncated documents are stored, because the same request would give the same answer again: a
retry changes the seed instead.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Sequence

from workflow_scripts.core.hashing import canonical_json, hash_bytes
from workflow_scripts.llm.types import LLMBackend, LLMRequest, LLMResponse, answers_as_they_come

log = logging.getLogger(__name__)

DB_NAME = "requests.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID
"""
_CHUNK = 500  # keys per SELECT ... IN (...)


def request_key(identity: str, request: LLMRequest) -> str:
    return hash_bytes(canonical_json({"identity": identity, "request": request.payload()}).encode())


class RequestCache:
    """Durable key -> response store in ``<directory>/requests.sqlite3``."""

    def __init__(self, directory: Path | str, timeout_s: float = 120.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / DB_NAME
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, LLMResponse]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, LLMResponse] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, text in self._db.execute(
                    f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk):
                found[key] = LLMResponse.from_dict(json.loads(text))
        return found

    def put_many(self, items: Sequence[tuple[str, str, LLMRequest, LLMResponse]]) -> int:
        """Store (key, identity, request, response) records in one transaction; returns rows added."""
        if not items:
            return 0
        now = time.time()
        rows = [(key, identity, canonical_json(request.payload()), canonical_json(response.to_dict()), now)
                for key, identity, request, response in items]
        before = self._db.total_changes
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self._db.total_changes - before


class CachedBackend:
    """Wraps a backend: look every request up first, call the backend only for misses, store the answers.

    Counters (``requests``, ``hits``, ``backend_requests``, ``backend_seconds``, token sums) describe
    what this wrapper did since it was created.
    """

    def __init__(self, backend: LLMBackend, cache: RequestCache) -> None:
        self.backend = backend
        self.cache = cache
        self.requests = 0
        self.hits = 0
        self.backend_requests = 0
        self.backend_seconds = 0.0
        self.backend_prompt_tokens = 0
        self.backend_completion_tokens = 0
        self.transient_errors = 0
        self.last_hits: list[bool] = []

    def identity(self) -> str:
        return self.backend.identity()

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        identity = self.backend.identity()
        keys = [request_key(identity, r) for r in requests]
        found = self.cache.get_many(keys)
        self.requests += len(requests)
        missing: dict[str, LLMRequest] = {}
        for key, request in zip(keys, requests):
            if key not in found and key not in missing:
                missing[key] = request
        self.last_hits = [key in found for key in keys]
        self.hits += sum(self.last_hits)
        if missing:
            self._ask(identity, missing, found)
        return [found[key] for key in keys]

    def _ask(self, identity: str, missing: dict[str, LLMRequest], found: dict[str, LLMResponse]) -> None:
        """Each answer goes into the cache as soon as the backend hands it over: a kill loses only the
        requests in flight, not the whole batch."""
        pending = list(missing.items())
        started = time.perf_counter()
        answered = 0
        for index, answer in answers_as_they_come(self.backend, [request for _, request in pending]):
            key, request = pending[index]
            answered += 1
            self.backend_prompt_tokens += answer.prompt_tokens
            self.backend_completion_tokens += answer.completion_tokens
            found[key] = answer
            if answer.transient:
                self.transient_errors += 1
            else:
                self.cache.put_many([(key, identity, request, answer)])
        self.backend_seconds += time.perf_counter() - started
        self.backend_requests += len(pending)
        if answered != len(pending):
            raise RuntimeError(f"backend {identity} answered {answered} of {len(pending)} requests")
