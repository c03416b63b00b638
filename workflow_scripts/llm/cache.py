"""A content-addressed cache of LLM requests, shared by every experiment, every stage and every concurrent job.

Key: sha256 of (backend identity incl. model revision, full messages, decoding parameters, JSON schema,
seed). Responses that failed for a transient reason (HTTP errors after all retries) are never stored; invalid
or truncated documents are stored, because the same request would give the same answer again: a retry
changes the seed instead.

Layout of a cache directory (plain files only: safe on NFS/Lustre, no SQLite, no WAL, no fcntl locks)::

    shards/<host>-<pid>-<random>.jsonl   append-only, one file per writing process (work in progress)
    packs/<sha256>.jsonl                 immutable, sorted by key, named by the hash of its content
    claims/<key[:2]>/<key>               a request being asked right now by some job (see below)

Every record is one line ``{"key": "<64 hex>", "identity": ..., "request": ..., "response": ...}`` with the
key first, so an index is built by slicing bytes, not by parsing JSON. A process appends only to its own shard,
each group of answers with one ``write`` then ``fsync``: a kill leaves at most a torn last line, which readers
ignore (a line counts once it ends with a newline). Readers keep an in-memory index of the shards (key ->
file, offset, length; about 250 bytes per record) and re-scan only the new bytes when a key is missing. Packs
need no index: lookups binary-search the sorted lines through ``mmap``.

``python -m workflow_scripts.llm.cache compact DIR`` merges the shards of finished writers (closed, their pid
gone on this host, or idle for ``--min-idle-minutes`` on another host) into one new pack
(keys already packed are dropped) and deletes them; existing packs are never rewritten (``--repack`` merges
them too), so a DVC remote stores each pack once. Share paid answers with ``dvc add DIR/packs`` +
``dvc push`` (a collaborator: ``dvc pull``); shards and claims stay local work in progress.

Claims keep concurrent jobs from paying twice for one request. Before sending a miss, a job creates
``claims/<key[:2]>/<key>`` with ``O_CREAT|O_EXCL`` (atomic on NFSv3+ too), holding its host, pid and a token; a
thread refreshes the file's mtime (the heartbeat) while the request is in flight, and the claim is removed once
the answer is stored or has failed. A job that finds a key claimed waits for the answer to appear in the cache
(polling with backoff) and asks itself only when the claim disappears without an answer or goes stale (no
heartbeat for ``stale_after_s``, or the owner's pid is dead on this same host); a stale claim is taken over by
renaming it away, which only one contender can do. Heartbeats compare the file server's mtime with the local
clock: hosts need clocks within ``stale_after_s`` of each other (NTP).

An old SQLite cache (``requests.sqlite3``) found in the directory is imported into a shard once and renamed to
``requests.sqlite3.imported``, so paid answers are kept.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import mmap
import os
import secrets
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from workflow_scripts.core.hashing import canonical_json, hash_bytes
from workflow_scripts.llm.types import LLMBackend, LLMRequest, LLMResponse, answers_as_they_come

log = logging.getLogger(__name__)

SHARDS, PACKS, CLAIMS = "shards", "packs", "claims"
CLOSED = ".closed"  # shards/<name>.jsonl.closed: the writer of <name>.jsonl closed its cache
LEGACY_DB = "requests.sqlite3"
DB_NAME = LEGACY_DB  # the old name, for callers that look for it
_PREFIX = b'{"key":"'
_KEY_END = len(_PREFIX) + 64
_LINEAR_SCAN_BYTES = 16384  # below this window, a pack lookup reads lines one after another
_SERIAL_CLAIMS, _CLAIM_THREADS = 16, 16  # more claims than this at once: created by a thread pool


def request_key(identity: str, request: LLMRequest) -> str:
    return hash_bytes(canonical_json({"identity": identity, "request": request.payload()}).encode())


def _record_line(key: str, identity: str, request: LLMRequest | dict, response: LLMResponse | dict) -> bytes:
    payload = request.payload() if isinstance(request, LLMRequest) else request
    answer = response.to_dict() if isinstance(response, LLMResponse) else response
    rest = canonical_json({"identity": identity, "request": payload, "response": answer})
    return f'{{"key":"{key}",{rest[1:]}\n'.encode()


def _key_of(line: bytes) -> str | None:
    if not line.startswith(_PREFIX) or len(line) < _KEY_END + 2 or line[_KEY_END:_KEY_END + 1] != b'"':
        return None
    return line[len(_PREFIX):_KEY_END].decode("ascii")


def _response_of(line: bytes) -> LLMResponse:
    return LLMResponse.from_dict(json.loads(line)["response"])


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Pack:
    """An immutable pack: sorted lines, searched by bisection over byte offsets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "rb")
        size = os.fstat(self._file.fileno()).st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.size = size

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()

    def _line(self, start: int) -> tuple[bytes, int]:
        assert self._map is not None
        end = self._map.find(b"\n", start)
        end = self.size if end < 0 else end + 1
        return self._map[start:end], end

    def find(self, key: str) -> bytes | None:
        if self._map is None:
            return None
        wanted = key.encode("ascii")
        lo, hi = 0, self.size  # lo is a line start; the wanted line, if any, starts in [lo, hi)
        while hi - lo > _LINEAR_SCAN_BYTES:
            mid = (lo + hi) // 2
            newline = self._map.find(b"\n", mid - 1, hi)
            start = hi if newline < 0 else newline + 1
            if start >= hi:
                hi = mid
                continue
            found = self._map[start + len(_PREFIX):start + _KEY_END]
            if found == wanted:
                return self._line(start)[0]
            if found < wanted:
                lo = self._line(start)[1]
            else:
                hi = start
        while lo < hi:
            line, after = self._line(lo)
            found = line[len(_PREFIX):_KEY_END]
            if found == wanted:
                return line
            if found > wanted:
                return None
            lo = after
        return None

    def __len__(self) -> int:
        if self._map is None:
            return 0
        step = 64 << 20
        return sum(self._map[start:start + step].count(b"\n") for start in range(0, self.size, step))

    def lines(self) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    yield line


@dataclass
class _ShardState:
    path: Path
    offset: int = 0  # bytes indexed so far: always the end of a complete line


class RequestCache:
    """Durable key -> response store in ``directory`` (see the module docstring for the layout).

    ``claims=False`` turns the cross-job claims off (one job at a time, or a read-only use).
    """

    def __init__(self, directory: Path | str, timeout_s: float = 120.0, *, claims: bool = True,
                 heartbeat_s: float = 15.0, stale_after_s: float = 300.0) -> None:
        self.directory = Path(directory)
        for sub in (SHARDS, PACKS, CLAIMS):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.claims_enabled = claims
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.host = socket.gethostname()
        self.writer_name = f"{_safe(self.host)}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self._lock = threading.RLock()
        self._index: dict[str, tuple[int, int, int]] = {}
        self._shards: list[_ShardState] = []
        self._shard_numbers: dict[str, int] = {}
        self._packs: dict[str, _Pack] = {}
        self._held: dict[str, str] = {}  # claimed key -> token
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._import_legacy()
        self.refresh()

    # --- reading -----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Pick up new packs, new shards and the new lines of known shards."""
        with self._lock:
            for path in sorted((self.directory / PACKS).glob("*.jsonl")):
                if path.name not in self._packs:
                    try:
                        self._packs[path.name] = _Pack(path)
                    except FileNotFoundError:
                        continue
            for path in sorted((self.directory / SHARDS).glob("*.jsonl")):
                if path.name not in self._shard_numbers:
                    self._shard_numbers[path.name] = len(self._shards)
                    self._shards.append(_ShardState(path))
            for number, shard in enumerate(self._shards):
                self._scan(number, shard)

    def _scan(self, number: int, shard: _ShardState) -> None:
        try:
            with open(shard.path, "rb") as handle:
                handle.seek(shard.offset)
                data = handle.read()
        except FileNotFoundError:  # compacted away: its records are in a pack now
            return
        position, index, base = 0, self._index, shard.offset
        while True:
            end = data.find(b"\n", position)
            if end < 0:
                break  # a torn or still-being-written last line: not a record (yet)
            if data.startswith(_PREFIX, position) and data[position + _KEY_END:position + _KEY_END + 1] == b'"':
                key = data[position + len(_PREFIX):position + _KEY_END].decode("ascii")
                if key not in index:
                    index[key] = (number, base + position, end + 1 - position)
            position = end + 1
        shard.offset += position

    def _read_line(self, key: str) -> bytes | None:
        location = self._index.get(key)
        if location is not None:
            number, offset, length = location
            try:
                with open(self._shards[number].path, "rb") as handle:
                    handle.seek(offset)
                    line = handle.read(length)
                if len(line) == length:
                    return line
            except FileNotFoundError:
                pass
            del self._index[key]  # a compacted shard: look in the packs
        for name in list(self._packs):
            line = self._packs[name].find(key)
            if line is not None:
                return line
        return None

    def _lookup(self, keys: Iterable[str]) -> dict[str, LLMResponse]:
        found: dict[str, LLMResponse] = {}
        for key in keys:
            if key in found:
                continue
            line = self._read_line(key)
            if line is None:
                continue
            try:
                found[key] = _response_of(line)
            except (ValueError, KeyError) as error:  # a damaged line: treat as missing, ask again
                log.warning("request cache %s: unreadable record %s (%s)", self.directory, key[:12], error)
        return found

    def get_many(self, keys: Iterable[str]) -> dict[str, LLMResponse]:
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            found = self._lookup(wanted)
            if len(found) < len(wanted):
                self.refresh()  # another job may have answered since
                found.update(self._lookup(k for k in wanted if k not in found))
        return found

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._read_line(key) is not None

    def keys(self) -> set[str]:
        """Every stored key (reads the packs in full: for tests and stats, not for hot paths)."""
        with self._lock:
            self.refresh()
            found = set(self._index)
            for pack in self._packs.values():
                found.update(k for k in (_key_of(line) for line in pack.lines()) if k is not None)
            return found

    def __len__(self) -> int:
        return len(self.keys())

    # --- writing -----------------------------------------------------------------------------------------

    def put_many(self, items: Sequence[tuple[str, str, LLMRequest, LLMResponse]]) -> int:
        """Append (key, identity, request, response) records not stored yet, with one write and one fsync;
        returns how many were added."""
        with self._lock:
            lines: list[bytes] = []
            seen: set[str] = set()
            for key, identity, request, response in items:
                if key in seen or self._read_line(key) is not None:
                    continue
                seen.add(key)
                lines.append(_record_line(key, identity, request, response))
            if lines:
                self._append(b"".join(lines))
            return len(lines)

    def _append(self, data: bytes) -> None:
        path = self.directory / SHARDS / self.writer_name
        new = not path.exists()
        # opened per group, so a shard removed by a careless compaction is recreated instead of written unlinked
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _fsync_dir(path.parent)
        if self.writer_name not in self._shard_numbers:
            self._shard_numbers[self.writer_name] = len(self._shards)
            self._shards.append(_ShardState(path))
        self._scan(self._shard_numbers[self.writer_name], self._shards[self._shard_numbers[self.writer_name]])

    # --- claims ------------------------------------------------------------------------------------------

    def _claim_path(self, key: str) -> Path:
        return self.directory / CLAIMS / key[:2] / key

    def try_claim(self, key: str) -> bool:
        """Claim ``key`` for this process: True when it is ours now (also when claims are off)."""
        if not self.claims_enabled:
            return True
        path = self._claim_path(key)
        token = secrets.token_hex(8)
        body = json.dumps({"host": self.host, "pid": os.getpid(), "token": token, "since": time.time()}).encode()
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            except FileExistsError:
                if not self._take_over_if_stale(path):
                    return False
                continue
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            with self._lock:
                self._held[key] = token
            self._start_heartbeat()
            return True
        return False

    def try_claim_many(self, keys: Iterable[str]) -> set[str]:
        """The keys of ``keys`` this process could claim; file operations overlap (NFS round trips)."""
        wanted = list(keys)
        if len(wanted) <= _SERIAL_CLAIMS or not self.claims_enabled:
            return {key for key in wanted if self.try_claim(key)}
        with ThreadPoolExecutor(_CLAIM_THREADS) as pool:
            return {key for key, ok in zip(wanted, pool.map(self.try_claim, wanted)) if ok}

    def release_many(self, keys: Iterable[str]) -> None:
        with self._lock:
            held = [key for key in keys if key in self._held]
        if len(held) <= _SERIAL_CLAIMS:
            for key in held:
                self.release(key)
            return
        with ThreadPoolExecutor(_CLAIM_THREADS) as pool:
            list(pool.map(self.release, held))

    def claim_is_live(self, key: str) -> bool:
        """Whether some live job holds ``key``'s claim."""
        path = self._claim_path(key)
        return path.exists() and not self._is_stale(path)

    def _is_stale(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
            owner = json.loads(path.read_bytes() or b"{}")
        except FileNotFoundError:
            return False
        except ValueError:  # being written right now, or torn: judge by age alone
            owner = {}
        if age > self.stale_after_s:
            return True
        return owner.get("host") == self.host and isinstance(owner.get("pid"), int) and \
            owner["pid"] != os.getpid() and not _pid_alive(owner["pid"])

    def _take_over_if_stale(self, path: Path) -> bool:
        if not self._is_stale(path):
            return False
        graveyard = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(path, graveyard)  # only one contender wins the rename
        except FileNotFoundError:
            return True  # already gone: try to create it again
        log.info("request cache: took over the stale claim %s", path.name[:12])
        graveyard.unlink(missing_ok=True)
        return True

    def release(self, key: str) -> None:
        with self._lock:
            token = self._held.pop(key, None)
        if token is None:
            return
        path = self._claim_path(key)
        try:
            if json.loads(path.read_bytes()).get("token") == token:
                path.unlink()
        except (FileNotFoundError, ValueError):
            pass

    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._heartbeat is not None and self._heartbeat.is_alive():
                return
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="cache-claims-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                held = list(self._held)
            for key in held:
                try:
                    os.utime(self._claim_path(key))
                except FileNotFoundError:
                    pass

    # --- life cycle --------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            for key in list(self._held):
                self.release(key)
            self._stop.set()
            own = self.directory / SHARDS / self.writer_name
            if own.exists():  # this writer is done: `compact` may merge its shard
                own.with_name(own.name + CLOSED).touch()
            for pack in self._packs.values():
                pack.close()
            self._packs.clear()

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _import_legacy(self) -> None:
        """Bring the records of an old SQLite cache into a shard once (so no paid answer is lost)."""
        legacy = self.directory / LEGACY_DB
        if not legacy.is_file():
            return
        target = self.directory / SHARDS / "imported-requests-sqlite3.jsonl"
        temporary = target.with_name(f".tmp-{self.writer_name}")
        count = 0
        try:
            db = sqlite3.connect(f"{legacy.resolve().as_uri()}?mode=ro", uri=True, timeout=self.timeout_s)
            try:
                with open(temporary, "wb") as out:
                    for key, identity, request, response in db.execute(
                            "SELECT key, identity, request, response FROM responses ORDER BY key"):
                        out.write(_record_line(key, identity, json.loads(request), json.loads(response)))
                        count += 1
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                db.close()
            if not target.exists():
                os.replace(temporary, target)
                target.with_name(target.name + CLOSED).touch()  # written once: `compact` may take it
                _fsync_dir(target.parent)
            for suffix in ("", "-wal", "-shm"):
                old = self.directory / f"{LEGACY_DB}{suffix}"
                if old.exists():
                    os.replace(old, old.with_name(old.name + ".imported"))
            log.info("request cache %s: imported %d records of %s", self.directory, count, LEGACY_DB)
        except (sqlite3.Error, OSError) as error:
            if isinstance(error, OSError) and error.errno == errno.ENOENT:
                return  # another process imported and renamed it first
            log.warning("request cache %s: could not import %s (%s)", self.directory, LEGACY_DB, error)
        finally:
            temporary.unlink(missing_ok=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._" else "_" for c in name)[:64] or "host"


class CachedBackend:
    """Wraps a backend: look every request up first, call the backend only for misses, store the answers.

    A miss claimed by another job is not sent: this job waits for that job's answer (``shared_waits`` counts
    them; they count as cache hits). Counters (``requests``, ``hits``, ``backend_requests``,
    ``backend_seconds``, token sums) describe what this wrapper did since it was created.
    """

    def __init__(self, backend: LLMBackend, cache: RequestCache, *, flush_every: int = 32,
                 flush_after_s: float = 0.5, poll_max_s: float = 5.0) -> None:
        self.backend = backend
        self.cache = cache
        self.flush_every = flush_every
        self.flush_after_s = flush_after_s
        self.poll_max_s = poll_max_s
        self.requests = 0
        self.hits = 0
        self.shared_waits = 0
        self.backend_requests = 0
        self.backend_seconds = 0.0
        self.backend_prompt_tokens = 0
        self.backend_completion_tokens = 0
        self.transient_errors = 0
        self.last_hits: list[bool] = []
        self._waited: set[str] = set()

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
        hit_before = {key for key in keys if key in found}
        if missing:
            self._resolve(identity, missing, found)
        waited = {key for key in missing if key in found and key in self._waited}
        self.last_hits = [key in hit_before or key in waited for key in keys]
        self.hits += sum(self.last_hits)
        return [found[key] for key in keys]

    def _resolve(self, identity: str, missing: dict[str, LLMRequest], found: dict[str, LLMResponse]) -> None:
        """Ask for the misses this job could claim; wait for those another job is asking, and ask for them
        too if that job goes away without an answer."""
        self._waited: set[str] = set()
        open_keys = dict(missing)
        delay = 0.05
        while open_keys:
            claimed = self.cache.try_claim_many(open_keys)
            mine = {k: r for k, r in open_keys.items() if k in claimed}
            # a claim freed just now may mean its answer was stored just now: look before paying
            answered_meanwhile = self.cache.get_many(mine) if mine else {}
            self.cache.release_many(answered_meanwhile)
            for key, answer in answered_meanwhile.items():
                found[key] = answer
                self._waited.add(key)
                open_keys.pop(key)
                mine.pop(key)
            if mine:
                self._ask(identity, mine, found)
                for key in mine:
                    open_keys.pop(key)
                delay = 0.05
            if not open_keys:
                break
            answered = self.cache.get_many(open_keys)
            for key, answer in answered.items():
                found[key] = answer
                self._waited.add(key)
                open_keys.pop(key)
            if open_keys and not answered:
                log.debug("waiting for %d requests other jobs are asking", len(open_keys))
                time.sleep(delay)
                delay = min(delay * 2, self.poll_max_s)
        self.shared_waits += len(self._waited)

    def _ask(self, identity: str, missing: dict[str, LLMRequest], found: dict[str, LLMResponse]) -> None:
        """Each answer goes into the cache as it arrives (in groups of ``flush_every`` or every
        ``flush_after_s``): a kill loses only the requests in flight."""
        pending = list(missing.items())
        started = time.perf_counter()
        answered = 0
        unsaved: list[tuple[str, str, LLMRequest, LLMResponse]] = []
        oldest = 0.0

        def flush() -> None:
            if unsaved:
                self.cache.put_many(unsaved)
                self.cache.release_many(record[0] for record in unsaved)
                unsaved.clear()

        try:
            for index, answer in answers_as_they_come(self.backend, [request for _, request in pending]):
                key, request = pending[index]
                answered += 1
                self.backend_prompt_tokens += answer.prompt_tokens
                self.backend_completion_tokens += answer.completion_tokens
                found[key] = answer
                if answer.transient:
                    self.transient_errors += 1
                    self.cache.release(key)
                    continue
                if not unsaved:
                    oldest = time.monotonic()
                unsaved.append((key, identity, request, answer))
                if len(unsaved) >= self.flush_every or time.monotonic() - oldest >= self.flush_after_s:
                    flush()
        finally:
            flush()
            self.cache.release_many(key for key, _ in pending)
            self.backend_seconds += time.perf_counter() - started
        self.backend_requests += len(pending)
        if answered != len(pending):
            raise RuntimeError(f"backend {identity} answered {answered} of {len(pending)} requests")


# --- maintenance commands ------------------------------------------------------------------------------------


def _shard_is_finished(path: Path, min_idle_s: float, host: str) -> bool:
    """A shard whose writer is done: closed, a dead pid on this host, else no write for ``min_idle_s``."""
    if path.with_name(path.name + CLOSED).exists():
        return True
    parts = path.stem.rsplit("-", 2)
    if len(parts) == 3 and parts[0] == _safe(host) and parts[1].isdigit():
        return not _pid_alive(int(parts[1]))
    return time.time() - path.stat().st_mtime >= min_idle_s


def compact(directory: Path, *, repack: bool = False, min_idle_s: float = 1800.0) -> dict[str, Any]:
    """Merge finished shards (and with ``repack`` every pack) into one new sorted pack; delete what it merged."""
    directory = Path(directory)
    host = socket.gethostname()
    shard_dir, pack_dir = directory / SHARDS, directory / PACKS
    pack_dir.mkdir(parents=True, exist_ok=True)
    shards = [p for p in sorted(shard_dir.glob("*.jsonl")) if _shard_is_finished(p, min_idle_s, host)]
    old_packs = sorted(pack_dir.glob("*.jsonl"))
    kept_packs = [] if repack else [_Pack(p) for p in old_packs]
    records: dict[str, bytes] = {}
    sources: list[Iterable[bytes]] = [_Pack(p).lines() for p in old_packs] if repack else []
    sources += [_complete_lines(p) for p in shards]
    for lines in sources:
        for line in lines:
            key = _key_of(line)
            if key is None or key in records or any(p.find(key) is not None for p in kept_packs):
                continue
            try:
                json.loads(line)
            except ValueError:
                log.warning("%s: skipped an unreadable record %s", directory, key[:12])
                continue
            records[key] = line
    for pack in kept_packs:
        pack.close()
    written = None
    if records:
        data = b"".join(records[k] for k in sorted(records))
        name = f"{hash_bytes(data)}.jsonl"
        temporary = pack_dir / f".tmp-{name}"
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, pack_dir / name)
        _fsync_dir(pack_dir)
        written = name
    for path in shards:
        path.unlink(missing_ok=True)
        path.with_name(path.name + CLOSED).unlink(missing_ok=True)
    if repack:
        for path in old_packs:
            if path.name != written:
                path.unlink(missing_ok=True)
    return {"pack": written, "records": len(records), "shards_merged": len(shards),
            "packs_merged": len(old_packs) if repack else 0}


def _complete_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                yield line


def stats(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    started = time.perf_counter()
    with RequestCache(directory, claims=False) as cache:
        opened = time.perf_counter() - started
        packs = {name: len(pack) for name, pack in cache._packs.items()}
        shard_records = len(cache._index)
        total = len(cache)
    claims = sum(1 for p in (directory / CLAIMS).rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in directory.rglob("*.jsonl"))
    return {"records": total, "packs": packs, "shard_records": shard_records,
            "shards": len(list((directory / SHARDS).glob("*.jsonl"))), "claims_in_flight": claims,
            "bytes": size, "open_seconds": round(opened, 3)}


def main(argv: Sequence[str] | None = None) -> int:
    from workflow_scripts.core.cli import setup_logging

    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.llm.cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("compact", help="merge finished shards into a new immutable pack")
    pack.add_argument("directory", type=Path, help="the cache directory (e.g. data/llm_cache)")
    pack.add_argument("--repack", action="store_true", help="merge the existing packs too (one pack in the end)")
    pack.add_argument("--min-idle-minutes", type=float, default=30.0,
                      help="a shard of another host counts as finished after this long without a write "
                      "(this host's shards: when their pid is gone); default 30")
    show = commands.add_parser("stats", help="records, packs, shards and claims of a cache directory")
    show.add_argument("directory", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    if not args.directory.is_dir():
        parser.error(f"{args.directory}: no such cache directory")
    if args.command == "compact":
        result = compact(args.directory, repack=args.repack, min_idle_s=args.min_idle_minutes * 60)
    else:
        result = stats(args.directory)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
