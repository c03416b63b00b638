"""OpenAI-compatible chat-completions client (OpenAI's API, ``vllm serve``, the project's own server).

Bounded concurrency (a thread pool of ``max_concurrency``), retries with exponential backoff and jitter
on 429 / 5xx / timeouts / connection errors (honouring ``Retry-After``), the API key read from the
environment variable the config names (never from the config itself, never logged), and
``response_format: json_schema`` for structured output. Standard library only.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

from workflow_scripts.config.generate import BackendOptions
from workflow_scripts.llm.types import LLMRequest, LLMResponse, finish_response, in_request_order, model_identity

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIBackend:
    def __init__(self, model: str, revision: str | None = None,
                 options: BackendOptions = BackendOptions(), structured_output: str = "json_schema") -> None:
        if not model:
            raise ValueError("the openai backend needs the served model name in 'path'")
        if structured_output not in ("json_schema", "json_object", "none"):
            raise ValueError(f"structured_output must be json_schema, json_object or none, got {structured_output!r}")
        self.model = model
        self.structured_output = structured_output
        self.revision = revision
        self.options = options
        self.url = options.base_url.rstrip("/") + "/chat/completions"
        self._api_key = os.environ.get(options.api_key_env) if options.api_key_env else None
        if not self._api_key and urlparse(options.base_url).hostname not in LOOPBACK:
            raise ValueError(
                f"no API key: set the environment variable {options.api_key_env!r} "
                f"(models' backend.api_key_env) for {options.base_url}"
            )
        self.http_calls = 0  # attempts, including retried ones
        self.retries = 0
        self._lock = threading.Lock()

    def identity(self) -> str:
        # The endpoint URL is left out on purpose: the same model behind another URL (or port) is the same
        # model. Pin snapshots with 'revision' (or a dated model name such as gpt-4o-2024-08-06).
        return model_identity("openai", self.model, self.revision)

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return in_request_order(self.generate_as_completed(requests), len(requests))

    def generate_as_completed(self, requests: Sequence[LLMRequest]) -> Iterator[tuple[int, LLMResponse]]:
        """Answers in the order they arrive (no waiting for a slow retry); requests not yet sent are
        cancelled when the caller stops early."""
        if not requests:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.options.max_concurrency, len(requests)),
                                  thread_name_prefix="llm-http")
        try:
            futures = {pool.submit(self._one, request): index for index, request in enumerate(requests)}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_new_tokens,
            "n": 1,
        }
        if self.options.send_seed:
            body["seed"] = int(request.seed) % (2**63)
        if request.repetition_penalty != 1:
            body["repetition_penalty"] = request.repetition_penalty  # vLLM's extension; OpenAI refuses it
        if request.json_schema is not None and self.structured_output == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "document", "schema": request.json_schema,
                                "strict": self.options.strict_schema},
            }
        elif request.json_schema is not None and self.structured_output == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _refusal(self, request: LLMRequest) -> str | None:
        """Why a request cannot be sent as it is (the endpoint would answer HTTP 400), else None."""
        if (request.json_schema is not None and self.structured_output == "json_object"
                and not any("json" in m["content"].lower() for m in request.messages)):
            return (f"{self.model}: JSON mode (structured_output: json_object) needs the word 'JSON' in the "
                    "messages, and this request's prompt has none")
        return None

    def _one(self, request: LLMRequest) -> LLMResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return LLMResponse(text="", finish_reason="error", error=refusal)
        data = json.dumps(self._body(request)).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        options = self.options
        last_error = ""
        for attempt in range(options.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
            try:
                payload = self._post(data, headers)
                return self._parse(payload, request)
            except _Retryable as error:
                last_error = str(error)
                if attempt == options.max_retries:
                    break
                delay = min(options.backoff_max_s, options.backoff_initial_s * 2**attempt)
                delay *= 1 + 0.25 * random.random()  # jitter spreads out synchronised retries
                if error.retry_after is not None:
                    delay = max(delay, min(error.retry_after, options.backoff_max_s))
                log.debug("retrying in %.2fs after: %s", delay, last_error)
                time.sleep(delay)
            except _Fatal as error:
                return LLMResponse(text="", finish_reason="error", error=str(error), transient=True)
        return LLMResponse(text="", finish_reason="error", transient=True,
                           error=f"gave up after {options.max_retries + 1} attempts: {last_error}")

    def _post(self, data: bytes, headers: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self.http_calls += 1
        http_request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http_request, timeout=self.options.timeout_s) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as error:
            body = error.read()[:300].decode(errors="replace")
            if error.code in RETRY_STATUS:
                retry_after = error.headers.get("Retry-After") if error.headers else None
                try:
                    seconds = float(retry_after) if retry_after is not None else None
                except ValueError:
                    seconds = None
                raise _Retryable(f"HTTP {error.code}: {body}", seconds) from None
            raise _Fatal(f"HTTP {error.code}: {body}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as error:
            raise _Retryable(f"{type(error).__name__}: {error}") from None
        except json.JSONDecodeError as error:
            raise _Retryable(f"unreadable reply: {error}") from None

    @staticmethod
    def _parse(payload: dict[str, Any], request: LLMRequest) -> LLMResponse:
        try:
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
            reason = choice.get("finish_reason") or "stop"
            usage = payload.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise _Retryable(f"malformed reply ({error!r})") from None
        finish = "length" if reason == "length" else "stop"
        if choice["message"].get("refusal"):
            return LLMResponse(text=text, finish_reason="error", error=f"refused: {choice['message']['refusal']}",
                               prompt_tokens=int(usage.get("prompt_tokens", 0)),
                               completion_tokens=int(usage.get("completion_tokens", 0)))
        return finish_response(text, request, int(usage.get("prompt_tokens", 0)),
                               int(usage.get("completion_tokens", 0)), finish)


class _Fatal(Exception):
    """A reply that retrying will not fix (400, 401, 404 ...)."""
