"""The one LLM interface every stage uses: requests in, responses out, in batches.

``LLMRequest`` carries chat messages, decoding parameters, an optional JSON schema (constrained
decoding) and a per-request seed. ``LLMResponse`` carries the text, the parsed JSON (``None`` when
the text is not schema-valid JSON), token counts and a finish reason in {"stop", "length", "error"}.

A backend implements :class:`LLMBackend`: ``generate(requests) -> responses`` (same length, same
order) and ``identity()``, a string naming the model, its revision and the backend, which is part of
every cache key. :func:`load_backend` builds one from a ``ModelSpec`` of the config's model registry.
Backends import only this module; :mod:`workflow_scripts.llm.loader` builds them (lazily, no torch import).

Typical use (with the shared, content-addressed cache)::

    from workflow_scripts.llm.types import LLMRequest
    from workflow_scripts.llm.loader import load_backend
    from workflow_scripts.llm.cache import RequestCache, CachedBackend

    backend = CachedBackend(load_backend(spec, local_models_dir), RequestCache(cache_dir))
    [response] = backend.generate([LLMRequest(messages=[{"role": "user", "content": "..."}], seed=7)])
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol, Sequence, runtime_checkable

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "error"]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion request. ``seed`` makes sampling reproducible (where the backend allows)."""

    messages: tuple[dict[str, str], ...] | list[dict[str, str]]
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    json_schema: dict[str, Any] | None = None
    seed: int = 0
    repetition_penalty: float = 1.0   # CTRL-style, on the tokens generated so far (local backends)

    def __post_init__(self) -> None:
        # Store messages as an immutable tuple of plain dicts so requests are hashable and safe to share.
        messages = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in self.messages)
        if not messages:
            raise ValueError("an LLMRequest needs at least one message")
        for message in messages:
            if message["role"] not in ROLES:
                raise ValueError(f"message role must be one of {ROLES}, got {message['role']!r}")
        object.__setattr__(self, "messages", messages)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.repetition_penalty < 1:
            raise ValueError(f"repetition_penalty must be >= 1, got {self.repetition_penalty}")

    def __hash__(self) -> int:  # json_schema is a dict: hash the canonical payload instead
        return hash(json.dumps(self.payload(), sort_keys=True))

    def payload(self) -> dict[str, Any]:
        """Everything that determines the answer, as plain JSON-able data (used in cache keys)."""
        return {
            "messages": [dict(m) for m in self.messages],
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "max_new_tokens": int(self.max_new_tokens),
            "json_schema": self.json_schema,
            "seed": int(self.seed),
            # only when used: requests without it keep the cache keys they always had
            **({"repetition_penalty": float(self.repetition_penalty)} if self.repetition_penalty != 1 else {}),
        }


@dataclass
class LLMResponse:
    """The answer to one request. ``parsed`` is the JSON value when a schema was given and it validated.

    ``error`` explains a non-usable answer (invalid JSON, truncation, transport failure); ``transient``
    marks failures that say nothing about the request itself (HTTP 5xx after all retries ...): those are
    never cached, so a rerun asks again.
    """

    text: str
    parsed: Any | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason = "stop"
    cached_prompt_tokens: int = 0  # of prompt_tokens, those the provider served from its prompt cache
    error: str | None = field(default=None, compare=False)
    transient: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LLMResponse":
        return cls(text=data["text"], parsed=data.get("parsed"), prompt_tokens=int(data.get("prompt_tokens", 0)),
                   completion_tokens=int(data.get("completion_tokens", 0)),
                   cached_prompt_tokens=int(data.get("cached_prompt_tokens", 0)),
                   finish_reason=data.get("finish_reason", "stop"), error=data.get("error"),
                   transient=bool(data.get("transient", False)))

    @property
    def ok(self) -> bool:
        return self.finish_reason == "stop" and self.error is None


@runtime_checkable
class LLMBackend(Protocol):
    """What every backend offers. ``generate`` returns one response per request, in order. A backend that
    can hand answers over as they arrive also has ``generate_as_completed(requests)``, yielding
    ``(index, response)`` pairs in any order (see :func:`answers_as_they_come`)."""

    def identity(self) -> str: ...

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]: ...


def in_request_order(answers: Iterator[tuple[int, LLMResponse]], count: int) -> list[LLMResponse]:
    """``generate`` from ``generate_as_completed``: the ``(index, response)`` pairs put back in request order."""
    ordered: list[LLMResponse | None] = [None] * count
    for index, response in answers:
        ordered[index] = response
    return [r for r in ordered if r is not None]


def answers_as_they_come(backend: LLMBackend, requests: Sequence[LLMRequest]) -> Iterator[tuple[int, LLMResponse]]:
    """``(index, response)`` as soon as the backend has each one (all at the end for a backend that cannot)."""
    streaming = getattr(backend, "generate_as_completed", None)
    if streaming is not None:
        yield from streaming(requests)
    else:
        answers = backend.generate(requests)
        if len(answers) != len(requests):
            raise RuntimeError(f"backend {backend.identity()} returned {len(answers)} responses for "
                               f"{len(requests)} requests")
        yield from enumerate(answers)


def parse_json_output(text: str, schema: dict[str, Any] | None) -> tuple[Any | None, str | None]:
    """Parse model output as JSON and check it against ``schema``: (value, None) or (None, reason).

    ``strict=False`` accepts raw control characters inside strings, which some grammar engines emit.
    """
    stripped = text.strip()
    if stripped.startswith("```"):  # models without constrained decoding often fence their JSON
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
        text = stripped
    try:
        value = json.loads(text, strict=False)
    except json.JSONDecodeError as error:
        return None, f"invalid JSON: {error.msg} at char {error.pos}"
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as error:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return None, f"JSON does not match the schema at {where}: {error.message[:200]}"
    return value, None


def finish_response(text: str, request: LLMRequest, prompt_tokens: int, completion_tokens: int,
                    finish_reason: FinishReason) -> LLMResponse:
    """Build a response, parsing JSON when the request asked for a schema; a bad document is an error."""
    parsed, error = (None, None)
    if request.json_schema is not None:
        if finish_reason == "length":
            error = f"truncated at max_new_tokens={request.max_new_tokens}"
        else:
            parsed, error = parse_json_output(text, request.json_schema)
    return LLMResponse(text=text, parsed=parsed, prompt_tokens=prompt_tokens,
                       completion_tokens=completion_tokens,
                       finish_reason="error" if error and finish_reason == "stop" else finish_reason,
                       error=error)


FULL_HASH_LIMIT = 256 << 20  # bigger files are fingerprinted by size + first and last MiB


def fingerprint_model_dir(folder: Path | str) -> str:
    """Content fingerprint of a local model folder: file names and contents (big weight files sampled).

    Paths and mtimes do not enter, so a moved or re-pulled model keeps its identity (and its cache).
    """
    from workflow_scripts.core.hashing import hash_file, hash_value

    folder = Path(folder)
    parts: list[Any] = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        size = file.stat().st_size
        if size <= FULL_HASH_LIMIT:
            parts.append([rel, hash_file(file)])
        else:
            with open(file, "rb") as handle:
                head = handle.read(1 << 20)
                handle.seek(size - (1 << 20))
                tail = handle.read()
            parts.append([rel, size, hash_value([head.hex(), tail.hex()])])
    return hash_value(parts)[:16]


def model_identity(backend: str, source: str, revision: str | None) -> str:
    """``backend:model@revision``; a local folder is named by its content fingerprint, not its path."""
    if backend == "openai":
        return f"openai:{source}@{revision or 'unpinned'}"
    if Path(source).is_dir():
        return f"{backend}:dir-{fingerprint_model_dir(source)}@{revision or 'local'}"
    if revision is None:
        log.warning("model %s has no pinned revision: its cache keys say 'main'", source)
    return f"{backend}:{source}@{revision or 'main'}"
