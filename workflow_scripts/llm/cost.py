"""What LLM answers cost, and a budget that stops a stage before it would spend more than allowed.

Dollars come from token counts and a model's list :class:`~workflow_scripts.config.root.Price` (US dollars per
million tokens): prompt tokens the provider served from its prompt cache at ``cached_input_per_mtok``, the
other prompt tokens at ``input_per_mtok``, completion tokens at ``output_per_mtok``; the Batch API
(``backend.mode: batch``) multiplies the whole sum by ``batch_discount``. A model without a price (a local
model) costs 0.

Two figures per stage: the answers the artifact uses, counted as if all were paid (the same for identical
inputs: it goes into the manifest), and what this run actually paid (cache misses only: the run sidecar).

:class:`Budget` caps the first figure: before a chunk of requests is sent, the stage adds an upper-bound
estimate of the chunk (prompt at :data:`CHARS_PER_TOKEN` characters a token, completion at
``max_new_tokens``) to the cost of the answers it has so far, cache hits included, and stops with
:class:`BudgetExceeded` when the sum would exceed the budget. Answers already received stay in the request
cache, so a rerun with a larger budget resumes where the stop left off, and a rerun with the same budget
stops again before paying anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

from workflow_scripts.config.root import CHARS_PER_TOKEN
from workflow_scripts.core.cli import StageInterrupted
from workflow_scripts.llm.types import LLMRequest, LLMResponse

if TYPE_CHECKING:
    from workflow_scripts.config.root import Price
    from workflow_scripts.llm.cache import CachedBackend

log = logging.getLogger(__name__)

Mode = Literal["online", "batch"]
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators the chat format adds per message
MTOK = 1_000_000


@dataclass
class Usage:
    """Token sums of a set of answers (``cached_prompt_tokens`` is part of ``prompt_tokens``)."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, responses: Iterable[LLMResponse]) -> "Usage":
        for response in responses:
            self.requests += 1
            self.prompt_tokens += response.prompt_tokens
            self.cached_prompt_tokens += min(response.cached_prompt_tokens, response.prompt_tokens)
            self.completion_tokens += response.completion_tokens
        return self

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def cached_share(self) -> float:
        """The share of prompt tokens served from the provider's prompt cache."""
        return round(self.cached_prompt_tokens / self.prompt_tokens, 4) if self.prompt_tokens else 0.0


def cost_usd(usage: Usage, price: "Price | None", mode: Mode = "online") -> float:
    """Dollars of ``usage`` at ``price`` (0 without a price), rounded to micro-dollars."""
    if price is None:
        return 0.0
    cached_rate = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    uncached = usage.prompt_tokens - usage.cached_prompt_tokens
    dollars = (uncached * price.input_per_mtok + usage.cached_prompt_tokens * cached_rate
               + usage.completion_tokens * price.output_per_mtok) / MTOK
    if mode == "batch":
        dollars *= price.batch_discount
    return round(dollars, 6)


def backend_mode(options: Any) -> Mode:
    """``online`` or ``batch`` (the Batch API), from a model's backend options."""
    return "batch" if getattr(options, "mode", "online") == "batch" else "online"


def usage_counts(usage: Usage, price: "Price | None", mode: Mode, prefix: str = "") -> dict[str, float | int]:
    """The manifest's figures for ``usage``: tokens, the cached-token share and dollars."""
    return {
        f"{prefix}prompt_tokens": usage.prompt_tokens,
        f"{prefix}cached_prompt_tokens": usage.cached_prompt_tokens,
        f"{prefix}cached_prompt_share": usage.cached_share,
        f"{prefix}completion_tokens": usage.completion_tokens,
        f"{prefix}cost_usd": cost_usd(usage, price, mode),
    }


def price_info(price: "Price | None", mode: Mode) -> dict[str, Any]:
    """What the dollar figures were computed with (a price changes no answer, so it is not in the fingerprint)."""
    return {"price": None if price is None else price.model_dump(mode="json"), "billing": mode}


def estimate_prompt_tokens(request: LLMRequest) -> int:
    chars = sum(len(message["content"]) for message in request.messages)
    return -(-chars // CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(request.messages)


def estimate_usage(requests: Sequence[LLMRequest]) -> Usage:
    """An upper-bound guess before sending: every completion as long as ``max_new_tokens``, no cache hit."""
    return Usage(requests=len(requests), prompt_tokens=sum(estimate_prompt_tokens(r) for r in requests),
                 completion_tokens=sum(r.max_new_tokens for r in requests))


class BudgetExceeded(StageInterrupted):
    """The next chunk of requests could take the stage over its budget; nothing was published."""

    exit_code = 3
    log_level = logging.ERROR


class Budget:
    """``limit_usd`` (None: no cap) on the dollars of a stage's answers, named in messages by ``setting``
    (the config key to raise, e.g. ``generate.budget_usd``)."""

    def __init__(self, limit_usd: float | None, price: "Price | None", mode: Mode, setting: str,
                 where: str = "") -> None:
        self.limit_usd, self.price, self.mode, self.setting, self.where = limit_usd, price, mode, setting, where
        self.spent = Usage()      # every answer so far, cache hits included (as if paid)
        self.paid = Usage()       # answers bought in this run

    @property
    def spent_usd(self) -> float:
        return cost_usd(self.spent, self.price, self.mode)

    @property
    def paid_usd(self) -> float:
        return cost_usd(self.paid, self.price, self.mode)

    def charge(self, responses: Iterable[LLMResponse], *, bought: bool = False) -> None:
        answers = list(responses)
        self.spent.add(answers)
        if bought:
            self.paid.add(answers)

    @property
    def can_stop(self) -> bool:
        return self.limit_usd is not None and self.price is not None

    def check(self, requests: Sequence[LLMRequest]) -> None:
        """Raise :class:`BudgetExceeded` when sending ``requests`` could take the spend over the limit."""
        if not self.can_stop or not requests:
            return
        estimate = cost_usd(estimate_usage(requests), self.price, self.mode)
        if self.spent_usd + estimate <= self.limit_usd:
            return
        where = f"{self.where}: " if self.where else ""
        raise BudgetExceeded(
            f"{where}stopped before sending {len(requests)} requests: the answers so far cost "
            f"${self.spent_usd:.4f} (${self.paid_usd:.4f} of it paid in this run) and these could add up to "
            f"${estimate:.4f}, over {self.setting} = ${self.limit_usd:.4f}; raise {self.setting} in the config "
            "and rerun (answers received so far are cached and will not be paid again)")


class BudgetedBackend:
    """A :class:`~workflow_scripts.llm.cache.CachedBackend` whose cache misses are checked against a budget
    before they are sent; every answer it returns is charged (hits as if paid, misses as bought)."""

    def __init__(self, cached: "CachedBackend", budget: Budget) -> None:
        from workflow_scripts.llm.cache import request_key

        self.cached, self.budget, self._key = cached, budget, request_key

    def identity(self) -> str:
        return self.cached.identity()

    def __getattr__(self, name: str) -> Any:  # counters, cache and backend of the wrapped CachedBackend
        if name == "cached":
            raise AttributeError(name)
        return getattr(self.cached, name)

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        identity = self.cached.identity()
        keys = [self._key(identity, request) for request in requests]
        if self.budget.can_stop:
            found = self.cached.cache.get_many(keys)
            self.budget.check(list({k: r for k, r in zip(keys, requests) if k not in found}.values()))
        answers = self.cached.generate(requests)
        hits = self.cached.last_hits  # per request: answered from the cache (or by another job)
        bought: set[str] = set()
        for key, answer, hit in zip(keys, answers, hits):
            self.budget.charge([answer], bought=not hit and key not in bought)  # a duplicate is sent once
            if not hit:
                bought.add(key)
        return answers

