"""OpenAI-compatible chat completions on the ``openai`` SDK (OpenAI's API, ``vllm serve``, the project's server).

Online mode (``backend.mode: online``): one asyncio loop in a dedicated thread, one ``AsyncOpenAI`` client whose
keep-alive pool holds ``max_concurrency`` connections, a semaphore bounding the requests in flight, and answers
handed over as they arrive (no batch barrier: a slow retry holds up nobody). The SDK's own retries are off; ours
honour the server's ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date) and, on 429, the
``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` durations, else back off exponentially with jitter,
on 429 rate limits, 408/409/425/5xx, timeouts and connection errors. Credentials, permission, an unknown model or
route, and an exhausted quota stop the stage at once (``openai_errors.EndpointRefused``, naming the endpoint and
the key's environment variable, never the key). Other 4xx answers are non-transient failed responses with the server's
message. Usage (prompt, completion and cached prompt tokens) is recorded per response.

Batch mode (``backend.mode: batch``) sends the same request bodies through the Batch API: see
:mod:`workflow_scripts.llm.backends.openai_batch`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, Iterator, Sequence, TypeVar
from urllib.parse import urlparse

from workflow_scripts.config.generate import BackendOptions
from workflow_scripts.llm.backends.openai_errors import (
    EndpointRefused,
    Failed,
    GaveUp,
    Retryable,
    api_error,
    backoff_delay,
)
from workflow_scripts.llm.types import LLMRequest, LLMResponse, finish_response, in_request_order, model_identity

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
JSON_HEADERS = {"Content-Type": "application/json"}
T = TypeVar("T")


# --- the loop thread ----------------------------------------------------------------------------------------


class LoopThread:
    """An asyncio loop of its own in a daemon thread, so synchronous callers can run coroutines on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.submit(coroutine).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


# --- the backend --------------------------------------------------------------------------------------------


class OpenAIBackend:
    def __init__(self, model: str, revision: str | None = None, options: BackendOptions = BackendOptions(),
                 structured_output: str = "json_schema", state_dir: Path | str | None = None) -> None:
        if not model:
            raise ValueError("the openai backend needs the served model name in 'path'")
        if structured_output not in ("json_schema", "json_object", "none"):
            raise ValueError(f"structured_output must be json_schema, json_object or none, got {structured_output!r}")
        self.model = model
        self.structured_output = structured_output
        self.revision = revision
        self.options = options
        self.endpoint = options.base_url.rstrip("/")
        self._api_key = os.environ.get(options.api_key_env) if options.api_key_env else None
        if not self._api_key and urlparse(options.base_url).hostname not in LOOPBACK:
            raise ValueError(
                f"no API key: set the environment variable {options.api_key_env!r} "
                f"(models' backend.api_key_env) for {options.base_url}"
            )
        if options.mode == "batch" and state_dir is None:
            raise ValueError("backend.mode: batch needs a state directory for the submitted batches' ids")
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.http_calls = 0  # attempts, including retried ones
        self.retries = 0
        self._loop: LoopThread | None = None
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._batches: Any = None
        self._finalizer: weakref.finalize | None = None

    def identity(self) -> str:
        # The endpoint URL is left out on purpose: the same model behind another URL (or port) is the same
        # model. Pin snapshots with 'revision' (or a dated model name such as gpt-4o-2024-08-06).
        return model_identity("openai", self.model, self.revision)

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return in_request_order(self.generate_as_completed(requests), len(requests))

    def generate_as_completed(self, requests: Sequence[LLMRequest]) -> Iterator[tuple[int, LLMResponse]]:
        """Answers in the order they arrive; requests not yet answered are cancelled when the caller stops
        early. Raises EndpointRefused when the endpoint refuses us (key, permission, quota)."""
        if not requests:
            return
        if self.options.mode == "batch":
            yield from self._batch_jobs().answer(requests)
            return
        loop = self._started()
        futures = {loop.submit(self._answer(request)): index for index, request in enumerate(requests)}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Close the connection pool and stop the loop thread (a later request starts them again)."""
        if self._finalizer is not None:
            self._finalizer()
        self._loop, self._client, self._slots, self._finalizer = None, None, None, None

    # --- requests ---------------------------------------------------------------------------------------

    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The chat-completions request body (online and in batch files alike)."""
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

    def refusal(self, request: LLMRequest) -> str | None:
        """Why a request cannot be sent as it is (the endpoint would answer HTTP 400), else None."""
        if (request.json_schema is not None and self.structured_output == "json_object"
                and not any("json" in m["content"].lower() for m in request.messages)):
            return (f"{self.model}: JSON mode (structured_output: json_object) needs the word 'JSON' in the "
                    "messages, and this request's prompt has none")
        return None

    def parse(self, payload: Any, request: LLMRequest) -> LLMResponse:
        """A chat-completion JSON object -> LLMResponse; a malformed one is Retryable."""
        try:
            choice = payload["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            reason = choice.get("finish_reason") or "stop"
            usage = payload.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
            cached_tokens = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:
            raise Retryable(f"malformed reply ({error!r})") from None
        if message.get("refusal"):
            response = LLMResponse(text=text, finish_reason="error", error=f"refused: {message['refusal']}",
                                   prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        else:
            response = finish_response(text, request, prompt_tokens, completion_tokens,
                                       "length" if reason == "length" else "stop")
        response.cached_prompt_tokens = cached_tokens
        return response

    async def _answer(self, request: LLMRequest) -> LLMResponse:
        refusal = self.refusal(request)
        if refusal is not None:
            return LLMResponse(text="", finish_reason="error", error=refusal)
        content = json.dumps(self.body(request), ensure_ascii=False).encode()  # once, not per attempt

        async def post() -> LLMResponse:
            payload = await self._client.post("/chat/completions", content=content, cast_to=object,
                                              options={"headers": JSON_HEADERS})
            return self.parse(payload, request)

        try:
            return await self.with_retries(post)
        except Failed as error:
            return LLMResponse(text="", finish_reason="error", error=str(error))
        except GaveUp as error:
            return LLMResponse(text="", finish_reason="error", transient=True, error=str(error))

    async def with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` with a slot of the semaphore per attempt (none held while waiting to retry)."""
        options = self.options
        assert self._slots is not None
        last_error = ""
        for attempt in range(options.max_retries + 1):
            if attempt:
                self.retries += 1
            try:
                async with self._slots:
                    self.http_calls += 1
                    try:
                        return await call()
                    except (Retryable, Failed, EndpointRefused):
                        raise
                    except Exception as error:  # noqa: BLE001 - SDK errors are sorted out below
                        raise api_error(error, self.endpoint, options.api_key_env) from None
            except Retryable as error:
                last_error = str(error)
                if attempt == options.max_retries:
                    break
                delay = backoff_delay(attempt, error.delay_s, options)
                log.debug("retrying in %.2fs after: %s", delay, last_error)
                await asyncio.sleep(delay)
        raise GaveUp(f"gave up after {options.max_retries + 1} attempts: {last_error}")

    # --- plumbing ---------------------------------------------------------------------------------------

    def _started(self) -> LoopThread:
        """The loop thread, the client and the semaphore, made on first use (a cached rerun makes none)."""
        if self._loop is None:
            loop = LoopThread(f"llm-openai-{self.model}")
            loop.run(self._make_client())
            self._loop = loop
            # at close(), garbage collection or interpreter exit: the pool closed, the thread stopped
            self._finalizer = weakref.finalize(self, _shut_down, loop, self._client)
        return self._loop

    async def _make_client(self) -> None:
        import httpx2
        import openai

        size = self.options.max_concurrency
        # aiohttp's connection pool costs far less CPU per request than httpx's at 64+ requests in flight
        http_client = openai.DefaultAioHttpClient(
            limits=httpx2.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=httpx2.Timeout(self.options.timeout_s, connect=min(10.0, self.options.timeout_s)))
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key or "no-key-for-a-local-server", base_url=self.endpoint,
            max_retries=0, timeout=self.options.timeout_s, http_client=http_client)
        self._slots = asyncio.Semaphore(size)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the backend's loop (the batch mode's steps)."""
        return self._started().run(coroutine)

    @property
    def client(self) -> Any:
        self._started()
        return self._client

    def _batch_jobs(self) -> Any:
        if self._batches is None:
            from workflow_scripts.llm.backends.openai_batch import BatchJobs

            assert self.state_dir is not None
            self._batches = BatchJobs(self, self.state_dir)
        return self._batches


def _shut_down(loop: LoopThread, client: Any) -> None:
    if threading.current_thread() is loop.thread:  # collected on its own loop: it cannot wait for itself
        loop.loop.create_task(client.close())
        loop.loop.call_soon(loop.loop.stop)
        return
    try:
        loop.submit(client.close()).result(timeout=10)
    except Exception:  # noqa: BLE001 - closing a pool must not hide the caller's own error
        log.debug("closing the client failed", exc_info=True)
    loop.stop()
