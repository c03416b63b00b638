"""What an OpenAI-compatible endpoint's error answers mean: retry (and after how long), give up on this request,
or stop the stage. Shared by the online client and the batch mode."""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from typing import Mapping

from workflow_scripts.config.generate import BackendOptions
from workflow_scripts.core.cli import StageInterrupted

RETRY_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx
REFUSED_STATUS = {401: "authentication failed", 403: "permission denied", 404: "no such model or route"}


class EndpointRefused(StageInterrupted):
    """The endpoint refuses every request (credentials, permission, quota): no retry can help, so the stage stops
    with one line (answers already received are cached; the same command resumes once the cause is fixed)."""

    exit_code = 2
    log_level = logging.ERROR

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Retryable(Exception):
    """A failure worth another attempt; ``delay_s`` is the server's hint (None: back off on our own)."""

    def __init__(self, message: str, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class Failed(Exception):
    """A reply that retrying will not change (HTTP 400 ...): a non-transient failed response."""


class GaveUp(Exception):
    """Retryable failures on every attempt."""


# --- what the server says -----------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` duration ("1s", "6m0s", "20ms", "1h2m3.5s", or a bare number)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def server_delay(headers: Mapping[str, str], status: int, now: float | None = None) -> float | None:
    """How long the server asks us to wait before the next attempt, in seconds (None: it does not say)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_tz(value)
            if when is not None:
                moment = email.utils.mktime_tz(when)
                return max(0.0, moment - (time.time() if now is None else now))
    if status == 429:
        resets = {kind: parse_duration(headers.get(f"x-ratelimit-reset-{kind}")) for kind in ("requests", "tokens")}
        known = {kind: delay for kind, delay in resets.items() if delay is not None}
        exhausted = [delay for kind, delay in known.items() if headers.get(f"x-ratelimit-remaining-{kind}") == "0"]
        if exhausted:
            return max(exhausted)
        if known:
            return min(known.values())
    return None


def classify(status: int, code: str | None, message: str, headers: Mapping[str, str], endpoint: str,
             key_env: str | None) -> Exception:
    """The exception an HTTP error answer stands for: EndpointRefused, Retryable or Failed."""
    if status in REFUSED_STATUS or (status == 429 and code == "insufficient_quota"):
        what = "quota exhausted (insufficient_quota)" if status == 429 else REFUSED_STATUS[status]
        hint = f"check the key in ${key_env}" if key_env else "the endpoint needs an API key (backend.api_key_env)"
        if status == 404:
            hint = "check the model name ('path') and backend.base_url"
        elif status == 429:
            hint = "add credit or raise the limit of the account behind $" + (key_env or "the key")
        return EndpointRefused(f"{endpoint}: {what} (HTTP {status}: {message[:300]}); {hint}", status)
    if status in RETRY_STATUS or status >= 500:
        return Retryable(f"HTTP {status}: {message[:300]}", server_delay(headers, status))
    return Failed(f"HTTP {status}: {message[:300]}")


def api_error(error: Exception, endpoint: str, key_env: str | None) -> Exception:
    """Our exception for an SDK exception (unknown ones are returned as they are)."""
    import openai

    if isinstance(error, openai.APIStatusError):
        code = error.code or (error.type if error.type == "insufficient_quota" else None)
        headers = {key.lower(): value for key, value in error.response.headers.items()}
        return classify(error.status_code, code, error.message, headers, endpoint, key_env)
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError)):
        cause = error.__cause__
        return Retryable(f"{type(error).__name__}: {error}" + (f" ({cause!r})" if cause else ""))
    return error


def backoff_delay(attempt: int, hint: float | None, options: BackendOptions) -> float:
    """The server's hint when it gives one (a little jitter on top), else capped exponential backoff with jitter."""
    if hint is not None and hint <= options.backoff_max_s:
        return hint * (1 + 0.1 * random.random())
    delay = min(options.backoff_max_s, options.backoff_initial_s * 2**attempt)
    return delay * (1 + 0.25 * random.random())  # jitter spreads synchronised retries out
