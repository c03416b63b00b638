"""Batch API mode of the openai backend (``backend.mode: batch``): JSONL up, results down, nothing paid twice.

One call's requests become JSONL lines (``custom_id``: a hash of the request body, the same body as online),
uploaded with ``files.create(purpose="batch")`` and submitted with ``batches.create`` in groups of at most
``batch_max_requests``. Each submitted batch is recorded, before anything else happens, in a JSON state file
(rewritten atomically, under a file lock) in the state directory the caller names: a killed job, or a concurrent
one asking the same requests, finds the recorded batch and polls it instead of submitting again. Finished
batches' output and error files are downloaded and mapped back by ``custom_id``; lines that failed for a
transient reason (5xx, 429, expired, cancelled) are resubmitted in a new batch up to ``max_retries`` times, then
answered as transient failures (never cached, so a rerun asks again). A record is dropped once all of its lines
were handed to the caller and the caller came back for more (it has stored them by then), or after
:data:`RECORD_TTL_S`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from workflow_scripts.llm.backends.openai_errors import EndpointRefused, Failed, GaveUp, Retryable, classify
from workflow_scripts.llm.types import LLMRequest, LLMResponse

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
RECORD_TTL_S = 30 * 24 * 3600  # the Batch API keeps output files about this long


def after_recorded(batch_id: str) -> None:
    """Called right after a submitted batch is recorded (tests replace it to simulate a killed job)."""


def custom_id(body: dict[str, Any]) -> str:
    return "req-" + hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:40]


# --- the durable record -------------------------------------------------------------------------------------


class BatchState:
    """``{batch_id: record}`` of one (endpoint, model) pair, in one JSON file rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The records under an exclusive lock; written back when the block ends (also when it fails: a batch
        submitted in it is paid for). Call :meth:`save` to write them earlier."""
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                records = self.read()
                before = json.dumps(records, sort_keys=True)
                try:
                    yield records
                finally:
                    if json.dumps(records, sort_keys=True) != before:
                        self.save(records)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            return dict(json.loads(self.path.read_text())["batches"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise RuntimeError(f"{self.path}: unreadable batch record ({error}); it names batches already paid "
                               "for: repair it or move it away to submit again") from None

    def save(self, records: dict[str, Any]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(temporary, "w") as handle:
            json.dump({"batches": records}, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


# --- one call -----------------------------------------------------------------------------------------------


@dataclass
class _Call:
    """The requests of one generate call, by custom_id."""

    requests: dict[str, LLMRequest]
    indices: dict[str, list[int]]
    attempts: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)  # batch id -> record, not yet collected


class BatchJobs:
    def __init__(self, backend: Any, state_dir: Path) -> None:
        """``backend``: the OpenAIBackend whose client, retries, bodies and parsing this uses."""
        self.backend = backend
        self.options = backend.options
        name = hashlib.sha256(f"{backend.endpoint}\n{backend.identity()}".encode()).hexdigest()[:16]
        self.state = BatchState(Path(state_dir) / f"{_slug(backend.model)}-{name}.json")
        self.submitted = 0  # batches.create calls made by this process
        self._delivered: dict[str, set[str]] = {}  # batch id -> its ids handed to the caller

    def answer(self, requests: Sequence[LLMRequest]) -> Iterator[tuple[int, LLMResponse]]:
        """``(index, response)`` pairs as each batch finishes."""
        self._forget_delivered()
        call = _Call(requests={}, indices={})
        for index, request in enumerate(requests):
            refusal = self.backend.refusal(request)
            if refusal is not None:
                yield index, LLMResponse(text="", finish_reason="error", error=refusal)
                continue
            key = custom_id(self.backend.body(request))
            call.requests.setdefault(key, request)
            call.indices.setdefault(key, []).append(index)
        if not call.requests:
            return
        with self.state.locked() as records:  # one lock: a concurrent job asking the same requests finds them
            self._adopt(call, records)
            self._submit_all(call, records, sorted(set(call.requests) - set(call.attempts)), attempt=0)
        while call.waiting:
            finished = self._poll(call)
            if not finished:
                time.sleep(self.options.batch_poll_interval_s)
                continue
            for batch_id, batch in finished:
                record = call.waiting.pop(batch_id)
                answers, again = self._collect(call, record, batch)
                for key, response in answers.items():
                    self._delivered.setdefault(batch_id, set()).add(key)
                    for index in call.indices[key]:
                        yield index, response
                for key, response in self._resubmit(call, batch_id, again).items():
                    for index in call.indices[key]:
                        yield index, response

    # --- submitting -----------------------------------------------------------------------------------

    def _adopt(self, call: _Call, records: dict[str, Any]) -> None:
        """Recorded batches that hold some of these requests are polled, not submitted again."""
        for batch_id, record in sorted(records.items(), key=lambda item: item[1]["submitted_at"]):
            mine = set(call.requests).intersection(record["custom_ids"])
            if mine:
                log.info("batch %s (submitted %s) holds %d of these requests: polling it, not submitting",
                         batch_id, time.strftime("%Y-%m-%d %H:%M", time.localtime(record["submitted_at"])),
                         len(mine))
                call.waiting[batch_id] = record
                for key in mine:
                    call.attempts[key] = int(record.get("attempt", 0))

    def _submit_all(self, call: _Call, records: dict[str, Any], keys: list[str], attempt: int) -> None:
        """Submit ``keys`` in batches of batch_max_requests, each recorded (saved) as soon as it exists."""
        size = self.options.batch_max_requests
        for start in range(0, len(keys), size):
            group = keys[start:start + size]
            batch_id, record = self._submit(call, group, attempt)
            records[batch_id] = record
            self.state.save(records)
            call.waiting[batch_id] = record
            for key in group:
                call.attempts[key] = attempt
            after_recorded(batch_id)

    def _submit(self, call: _Call, keys: list[str], attempt: int) -> tuple[str, dict[str, Any]]:
        lines = [json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT,
                             "body": self.backend.body(call.requests[key])}, ensure_ascii=False) for key in keys]
        content = ("\n".join(lines) + "\n").encode()
        client = self.backend.client

        async def upload() -> Any:
            return await client.files.create(file=("requests.jsonl", content, "application/jsonl"),
                                             purpose="batch")

        uploaded = self._run(upload)

        async def create() -> Any:
            return await client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
                                               completion_window=self.options.completion_window,
                                               metadata={"source": "workflow_scripts", "attempt": str(attempt)})

        batch = self._run(create)
        self.submitted += 1
        log.info("submitted batch %s: %d requests (%.1f MB, attempt %d)", batch.id, len(keys), len(content) / 1e6,
                 attempt)
        return batch.id, {"input_file_id": uploaded.id, "custom_ids": keys, "attempt": attempt,
                          "submitted_at": time.time(), "endpoint": self.backend.endpoint}

    # --- polling and collecting -----------------------------------------------------------------------

    def _poll(self, call: _Call) -> list[tuple[str, Any]]:
        client = self.backend.client
        finished = []
        for batch_id in list(call.waiting):
            async def retrieve(batch_id: str = batch_id) -> Any:
                return await client.batches.retrieve(batch_id)

            try:
                batch = self._run(retrieve)
            except EndpointRefused as error:
                if error.status != 404:
                    raise
                raise EndpointRefused(
                    f"{self.backend.endpoint}: the recorded batch {batch_id} is unknown there (another account or "
                    f"endpoint?); it may hold paid answers: move {self.state.path} away to submit again") from None
            counts = getattr(batch, "request_counts", None)
            log.info("batch %s: %s%s", batch_id, batch.status,
                     f" ({counts.completed}/{counts.total} done, {counts.failed} failed)" if counts else "")
            if batch.status in TERMINAL:
                finished.append((batch_id, batch))
        return finished

    def _collect(self, call: _Call, record: dict[str, Any], batch: Any) -> tuple[dict[str, LLMResponse],
                                                                               dict[str, str]]:
        """Answers of the wanted lines of a finished batch, and the lines to send again (with the reason)."""
        wanted = set(record["custom_ids"]).intersection(call.requests)
        lines: dict[str, dict[str, Any]] = {}
        for file_id in (batch.error_file_id, batch.output_file_id):  # output lines win over error lines
            if file_id:
                for line in self._download(file_id).splitlines():
                    if line.strip():
                        item = json.loads(line)
                        lines[str(item.get("custom_id"))] = item
        answers: dict[str, LLMResponse] = {}
        again: dict[str, str] = {}
        for key in wanted:
            item = lines.get(key)
            if item is None:
                again[key] = f"batch {batch.id} ended {batch.status} without this line" + _batch_errors(batch)
                continue
            try:
                answers[key] = self._line_answer(item, call.requests[key])
            except Retryable as error:
                again[key] = f"batch {batch.id}: {error}"
            except Failed as error:
                answers[key] = LLMResponse(text="", finish_reason="error", error=str(error))
        return answers, again

    def _line_answer(self, item: dict[str, Any], request: LLMRequest) -> LLMResponse:
        response = item.get("response") or {}
        status = int(response.get("status_code") or 0)
        if status == 200:
            return self.backend.parse(response.get("body"), request)
        error = item.get("error") or ((response.get("body") or {}).get("error")) or {}
        message = str(error.get("message") or error or "no answer")
        if not status:
            raise Retryable(f"{error.get('code') or 'error'}: {message}")
        raise classify(status, error.get("code") or error.get("type"), message, {}, self.backend.endpoint,
                       self.options.api_key_env)

    def _resubmit(self, call: _Call, batch_id: str, again: dict[str, str]) -> dict[str, LLMResponse]:
        """Send failed lines again in a new batch, or give them up as transient failures after max_retries (then
        they leave the record, so a rerun asks again)."""
        retry: list[str] = []
        given_up: dict[str, LLMResponse] = {}
        for key, reason in sorted(again.items()):
            if call.attempts.get(key, 0) + 1 > self.options.max_retries:
                given_up[key] = LLMResponse(text="", finish_reason="error", transient=True, error=(
                    f"gave up after {call.attempts.get(key, 0) + 1} batch submissions: {reason}"))
            else:
                retry.append(key)
        with self.state.locked() as records:  # the lines leave the batch they failed in
            _drop_ids(records, batch_id, set(again))
            if retry:
                attempt = max(call.attempts.get(key, 0) for key in retry) + 1
                log.warning("%d lines of batch %s failed (%s): resubmitting them (attempt %d of %d)", len(retry),
                            batch_id, again[retry[0]], attempt, self.options.max_retries)
                self._submit_all(call, records, retry, attempt)
        return given_up

    def _download(self, file_id: str) -> str:
        client = self.backend.client

        async def content() -> Any:
            return await client.files.content(file_id)

        return self._run(content).text

    def _forget_delivered(self) -> None:
        """Drop records whose every line reached the caller in an earlier call (it has stored them by now), and
        records older than RECORD_TTL_S."""
        now = time.time()
        delivered, self._delivered = self._delivered, {}
        if not delivered and not self.state.path.is_file():
            return
        with self.state.locked() as records:
            for batch_id in list(records):
                record = records[batch_id]
                done = delivered.get(batch_id, set()).issuperset(record["custom_ids"])
                if done or now - float(record.get("submitted_at", now)) > RECORD_TTL_S:
                    del records[batch_id]

    def _run(self, call: Callable[[], Any]) -> Any:
        """One Batch API call with the backend's retries; an endpoint error that retries cannot fix stops."""
        try:
            return self.backend.run(self.backend.with_retries(call))
        except (Failed, GaveUp) as error:
            raise EndpointRefused(f"{self.backend.endpoint}: the Batch API failed: {error}") from None


def _drop_ids(records: dict[str, Any], batch_id: str, keys: set[str]) -> None:
    if batch_id not in records:
        return
    left = [key for key in records[batch_id]["custom_ids"] if key not in keys]
    if left:
        records[batch_id]["custom_ids"] = left
    else:
        del records[batch_id]


def _batch_errors(batch: Any) -> str:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return f" ({'; '.join(str(getattr(e, 'message', e)) for e in errors[:2])})" if errors else ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40]
