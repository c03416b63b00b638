"""Test stand-ins for an OpenAI endpoint: a scripted chat-completions server and a fast echo model."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from workflow_scripts.llm.types import LLMRequest, LLMResponse


class EchoBackend:
    """Answers at once: the last message back, with token counts (a model for the project's ChatServer)."""

    def identity(self) -> str:
        return "fake:echo@1"

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        return [LLMResponse(text=f"echo {r.messages[-1]['content']} seed {r.seed}", prompt_tokens=11,
                            completion_tokens=3, cached_prompt_tokens=4) for r in requests]


def completion(text: str, prompt_tokens: int = 7, completion_tokens: int = 2, cached_tokens: int = 0) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": cached_tokens}}}


@dataclass
class Reply:
    status: int = 200
    body: dict = field(default_factory=lambda: completion("ok"))
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def error_reply(status: int, message: str, code: str | None = None, headers: dict | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": code or "error", "code": code}}, headers or {})


class ScriptedServer(ThreadingHTTPServer):
    """``script(prompt, call_number) -> Reply`` answers each POST /v1/chat/completions; it records when each
    call arrived and how many were in flight at most."""

    daemon_threads = True

    def __init__(self, script: Callable[[str, int], Reply]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.calls: list[tuple[float, str]] = []  # (arrival time, prompt)
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up: expected in these tests


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        prompt = body["messages"][-1]["content"]
        server = self.server
        with server.lock:
            server.calls.append((time.monotonic(), prompt))
            number = len(server.calls)
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            reply = server.script(prompt, number)
            time.sleep(reply.delay_s)
        finally:
            with server.lock:
                server.in_flight -= 1
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
