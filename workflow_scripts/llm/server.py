"""A small OpenAI-compatible chat-completions server for a local model, on loopback only.

It serves a Hugging Face model through the transformers backend (requests arriving together are batched)
so the HTTP backend can be tested for real, and a tiny local model can stand in for an API in a
default run. Endpoints: ``POST /v1/chat/completions`` (messages, temperature, top_p, max_tokens,
seed, ``response_format`` json_schema), ``GET /v1/models``, ``GET /health``, and a Batch API stand-in:
``POST /v1/files`` (multipart upload), ``GET /v1/files/ID`` and ``/v1/files/ID/content``, ``POST /v1/batches``,
``GET /v1/batches/ID`` (each batch's lines are answered like online requests, in a background thread).

``--fail-first N --fail-status 429`` answers the first N completion calls with that status (and
``Retry-After: 0``): a test switch to exercise clients' retries. ``batch_fail_lines=N`` (in Python) puts the
first N batch lines into the error file as HTTP 500 answers.

    python -m workflow_scripts.llm.server --model data/local_models/tiny --port 8011
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import logging
import queue
import re
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

from workflow_scripts.llm.types import LLMBackend, LLMRequest, LLMResponse

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class _Batcher:
    """Collects concurrent requests into batches for one backend (which is not thread-safe)."""

    def __init__(self, backend: LLMBackend, batch_size: int, wait_s: float) -> None:
        self.backend = backend
        self.batch_size = batch_size
        self.wait_s = wait_s
        self._queue: "queue.Queue[tuple[LLMRequest, Future] | None]" = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="llm-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: LLMRequest) -> LLMResponse:
        return self.submit_future(request).result()

    def submit_future(self, request: LLMRequest) -> "Future[LLMResponse]":
        future: Future = Future()
        self._queue.put((request, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            try:
                answers = self.backend.generate([request for request, _ in batch])
                for (_, future), answer in zip(batch, answers):
                    future.set_result(answer)
            except Exception as error:  # noqa: BLE001 - every waiting client must be answered
                log.exception("generation failed")
                for _, future in batch:
                    future.set_exception(error)


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backend: LLMBackend, *, host: str = "127.0.0.1", port: int = 0,
                 model_name: str = "local", batch_size: int = 8, batch_wait_s: float = 0.02,
                 fail_first: int = 0, fail_status: int = 503, batch_fail_lines: int = 0,
                 batch_delay_s: float = 0.0) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the server binds to loopback only ({LOOPBACK_HOSTS}), not {host!r}")
        super().__init__((host, port), _Handler)
        self.model_name = model_name
        self.batcher = _Batcher(backend, batch_size, batch_wait_s)
        self.fail_remaining = fail_first
        self.fail_status = fail_status
        self.completion_calls = 0  # every POST to /chat/completions, failed ones included
        self.lock = threading.Lock()
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_creates = 0
        self.batch_lines = 0  # lines answered in batches
        self.batch_fail_remaining = batch_fail_lines
        self.batch_delay_s = batch_delay_s

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="chat-server", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.batcher.stop()
        self.server_close()


def completion_body(answer: LLMResponse, model: str) -> dict[str, Any]:
    """An LLMResponse as an OpenAI chat-completion object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text, "refusal": None},
            "finish_reason": "length" if answer.finish_reason == "length" else "stop",
        }],
        "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                  "total_tokens": answer.prompt_tokens + answer.completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": answer.cached_prompt_tokens}},
    }


def _store_file(server: ChatServer, content: bytes, purpose: str, filename: str) -> dict[str, Any]:
    meta = {"id": f"file-{uuid.uuid4().hex[:16]}", "object": "file", "bytes": len(content),
            "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed"}
    with server.lock:
        server.files[meta["id"]] = (meta, content)
    return meta


def _run_batch(server: ChatServer, batch_id: str) -> None:
    """Answer every line of a batch's input file; write the output and error files; mark it completed."""
    batch = server.batches[batch_id]
    batch.update(status="in_progress", in_progress_at=int(time.time()))
    if server.batch_delay_s:
        time.sleep(server.batch_delay_s)
    _, content = server.files[batch["input_file_id"]]
    pending: list[tuple[str, str, Any]] = []
    errors: list[dict[str, Any]] = []
    for raw in content.decode().splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        with server.lock:
            failing = server.batch_fail_remaining > 0
            server.batch_fail_remaining -= failing
        if failing:
            errors.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": line["custom_id"],
                           "response": {"status_code": 500, "request_id": uuid.uuid4().hex,
                                        "body": {"error": {"message": "injected failure (batch_fail_lines)",
                                                           "type": "server_error", "code": None}}},
                           "error": None})
            continue
        body = line["body"]
        pending.append((line["custom_id"], body.get("model", server.model_name),
                        server.batcher.submit_future(request_from_body(body))))
    outputs = []
    for key, model, future in pending:
        outputs.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": key,
                        "response": {"status_code": 200, "request_id": uuid.uuid4().hex,
                                     "body": completion_body(future.result(), model)}, "error": None})
    with server.lock:
        server.batch_lines += len(outputs)
    dump = lambda items: "".join(json.dumps(item) + "\n" for item in items).encode()  # noqa: E731
    batch["output_file_id"] = _store_file(server, dump(outputs), "batch_output", "output.jsonl")["id"] \
        if outputs else None
    batch["error_file_id"] = _store_file(server, dump(errors), "batch_output", "errors.jsonl")["id"] \
        if errors else None
    batch["request_counts"] = {"total": len(outputs) + len(errors), "completed": len(outputs),
                               "failed": len(errors)}
    batch.update(status="completed", completed_at=int(time.time()))


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename, bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


def request_from_body(body: dict[str, Any]) -> LLMRequest:
    schema = None
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    return LLMRequest(
        messages=body["messages"],
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        repetition_penalty=float(body.get("repetition_penalty", 1.0)),
        max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
        json_schema=schema,
        seed=int(body.get("seed", 0)),
    )


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error"
                                      if status < 500 else "server_error", "code": status}}, headers)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?")[0].rstrip("/")
        server = self.server
        if path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        elif path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
        elif match := re.fullmatch(r"/v1/files/([\w-]+)(/content)?", path):
            if match.group(1) not in server.files:
                self._error(404, f"no file {match.group(1)}")
                return
            meta, content = server.files[match.group(1)]
            if match.group(2):
                self._send_bytes(200, content, "application/octet-stream")
            else:
                self._send(200, meta)
        elif match := re.fullmatch(r"/v1/batches/([\w-]+)", path):
            if match.group(1) not in server.batches:
                self._error(404, f"no batch {match.group(1)}")
            else:
                self._send(200, dict(server.batches[match.group(1)]))
        else:
            self._error(404, f"no route {self.path}")

    def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _post_file(self, raw: bytes) -> None:
        try:
            parts = _multipart(self.headers.get("Content-Type", ""), raw)
            filename, content = parts["file"]
            purpose = parts["purpose"][1].decode()
        except (KeyError, ValueError, UnicodeDecodeError) as error:
            self._error(400, f"bad upload: {error!r}")
            return
        self._send(200, _store_file(self.server, content, purpose, filename or "upload.jsonl"))

    def _post_batch(self, raw: bytes) -> None:
        server = self.server
        try:
            body = json.loads(raw)
            input_file_id = body["input_file_id"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            self._error(400, f"bad batch: {error!r}")
            return
        if input_file_id not in server.files:
            self._error(404, f"no file {input_file_id}")
            return
        batch = {"id": f"batch_{uuid.uuid4().hex[:16]}", "object": "batch", "endpoint": body.get("endpoint"),
                 "input_file_id": input_file_id, "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "created_at": int(time.time()), "output_file_id": None,
                 "error_file_id": None, "metadata": body.get("metadata"),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        with server.lock:
            server.batches[batch["id"]] = batch
            server.batch_creates += 1
        threading.Thread(target=_run_batch, args=(server, batch["id"]), name="batch", daemon=True).start()
        self._send(200, dict(batch))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        if path == "/v1/files":
            self._post_file(raw)
            return
        if path == "/v1/batches":
            self._post_batch(raw)
            return
        if path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        server = self.server
        with server.lock:
            server.completion_calls += 1
            failing = server.fail_remaining > 0
            if failing:
                server.fail_remaining -= 1
        if failing:
            self._error(server.fail_status, "injected failure (--fail-first)", {"Retry-After": "0"})
            return
        try:
            body = json.loads(raw)
            request = request_from_body(body)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            self._error(400, f"bad request: {error}")
            return
        try:
            answer = server.batcher.submit(request)
        except Exception as error:  # noqa: BLE001
            self._error(500, f"generation failed: {error}")
            return
        self._send(200, completion_body(answer, body.get("model", server.model_name)))


def main(argv: Sequence[str] | None = None) -> int:
    from workflow_scripts.config.generate import BackendOptions
    from workflow_scripts.core.cli import setup_logging
    from workflow_scripts.llm.backends.hf import HFBackend

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local model folder or hub id")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--served-name", default=None, help="model id reported by /v1/models")
    parser.add_argument("--host", default="127.0.0.1", choices=LOOPBACK_HOSTS)
    parser.add_argument("--port", type=int, default=8011, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, default=None, help="write the bound port here when ready")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fail-first", type=int, default=0, help="TEST ONLY: fail the first N completions")
    parser.add_argument("--fail-status", type=int, default=503, help="TEST ONLY: status of those failures")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    backend = HFBackend(args.model, revision=args.revision,
                        options=BackendOptions(device=args.device, batch_size=args.batch_size))
    server = ChatServer(backend, host=args.host, port=args.port, model_name=args.served_name or args.model,
                        batch_size=args.batch_size, fail_first=args.fail_first, fail_status=args.fail_status)
    if args.port_file:
        args.port_file.write_text(str(server.server_address[1]))
    log.info("serving %s at %s", args.model, server.base_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.batcher.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
