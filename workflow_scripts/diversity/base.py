"""What every metric returns, and the interface of the streaming (lexical) metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from workflow_scripts.diversity.tokens import TokenBatch


@dataclass
class MetricResult:
    value: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "details": self.details}


class StreamingMetric(Protocol):
    """A metric computed in one pass over batches of documents; ``texts`` are the batch's raw strings."""

    name: str

    def update(self, batch: TokenBatch, texts: Sequence[str]) -> None: ...

    def result(self) -> MetricResult: ...


# A model that reads only the first N tokens of a text is given its first N x this many characters: tokenizing
# a whole 50 MB document to keep 512 tokens costs gigabytes. The kept tokens are the same unless the first N
# tokens average more than this many characters each.
CHARS_PER_TOKEN_BOUND = 64


def head_for_tokens(text: str, max_tokens: int) -> str:
    """The start of ``text`` that holds its first ``max_tokens`` tokens (see CHARS_PER_TOKEN_BOUND)."""
    return text[: max_tokens * CHARS_PER_TOKEN_BOUND]


def finite(value):
    """JSON-safe copy: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value
