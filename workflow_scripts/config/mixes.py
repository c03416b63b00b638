"""Configuration of the mix stage (light: pydantic only).

``mixes`` (global, one for the whole grid) fixes the budget and the real data; each experiment's ``mix``
(:class:`MixSpec`) says how much of its synthetic corpus goes in. Token counts accept integers or strings with
a suffix (``"34B"``, ``"4.5B"``, ``"500M"``, ``"128K"``) or exponent (``"34e9"``).

How the numbers combine (R = effective real tokens, S = effective synthetic tokens, B = budget = R + S):

- synthetic target: ``synthetic_effective_tokens`` (S fixed), ``synthetic_epochs`` (S = epochs x unique
  synthetic tokens; the default, 1 epoch, when an experiment has synthetic data and sets nothing), or
  ``real_to_synthetic`` (R_ref = ratio x S, where R_ref is all real data or one kind: ``ratio_reference``);
- budget: ``total_tokens`` (or ``total_steps`` x ``global_batch_size`` x ``seq_length``) fixes B and real data
  fills what synthetic leaves; ``real_tokens`` fixes R and B = R + S; with both, the mix R : S is scaled to B;
- the real share is split over web / code / math by ``real_weights`` (paper 4:1:1).

Every source's epochs = effective / unique tokens; up-weighting is repetition (epochs > 1), down-weighting a
partial pass (epochs < 1), each allowed or refused by ``allow_repetition`` / ``allow_partial_epochs``.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from workflow_scripts.config.base import Section

KINDS = ("web", "code", "math")
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_token_count(value: Any) -> Any:
    """``"4.5B"`` -> 4_500_000_000; ``"34e9"`` -> 34_000_000_000; ints pass; the rest is left to pydantic."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != round(value):
            raise ValueError(f"a token count must be a whole number, got {value}")
        return int(value)
    if isinstance(value, str):
        match = _COUNT.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a token count (examples: 1000000, '4.5B', '500M', '34e9')")
        number = float(match.group(1).replace("_", "")) * _SUFFIXES[match.group(2).lower()]
        if number != round(number):
            raise ValueError(f"{value!r} is not a whole number of tokens")
        return int(number)
    return value


TokenCount = Annotated[int, BeforeValidator(parse_token_count), Field(gt=0)]


class MixConfig(Section):
    """The ``mixes`` section: the training token budget and the real data, shared by every experiment."""

    total_tokens: TokenCount | None = Field(None, description="training token budget B")
    total_steps: int | None = Field(
        None, gt=0, description="alternative budget: steps x global_batch_size x seq"
    )
    global_batch_size: int | None = Field(None, gt=0, description="sequences per step, with total_steps")
    real_tokens: TokenCount | None = Field(None, description="effective real tokens R (paper: 34B)")
    real_weights: dict[Literal["web", "code", "math"], float] = Field(
        {"web": 4, "code": 1, "math": 1}, description="share of each real kind in R (paper: 4:1:1)"
    )
    seq_length: int = Field(2048, gt=0, description="training sequence length (Megatron samples)")
    allow_repetition: bool = Field(True, description="may a source be seen more than once (up-weighting)")
    allow_partial_epochs: bool = Field(
        True, description="may a source be seen less than once (down-weighting)"
    )

    @field_validator("real_weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in weights.items() if not (w >= 0 and math.isfinite(w))}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        return weights

    @model_validator(mode="after")
    def _one_budget(self) -> "MixConfig":
        if self.total_tokens is not None and self.total_steps is not None:
            raise ValueError("give total_tokens or total_steps (with global_batch_size), not both")
        if (self.total_steps is None) != (self.global_batch_size is None):
            raise ValueError("total_steps and global_batch_size go together")
        if self.budget_tokens is None and self.real_tokens is None:
            raise ValueError("give a budget: total_tokens, total_steps + global_batch_size, or real_tokens")
        if self.real_tokens is not None and not any(w > 0 for w in self.real_weights.values()):
            raise ValueError("real_tokens is set but every real weight is zero")
        return self

    @property
    def budget_tokens(self) -> int | None:
        """B when the config fixes it (total_tokens, or steps x batch x sequence length)."""
        if self.total_tokens is not None:
            return self.total_tokens
        if self.total_steps is not None and self.global_batch_size is not None:
            return self.total_steps * self.global_batch_size * self.seq_length
        return None


class MixSpec(Section):
    """An experiment's ``mix``: how much of its synthetic corpus goes in (at most one of the three)."""

    synthetic_effective_tokens: TokenCount | None = Field(
        None,
        description="S: effective synthetic tokens (paper: 4.5B for T x G, 20B templates, 5B generators)",
    )
    synthetic_epochs: float | None = Field(None, gt=0, description="S = epochs x unique synthetic tokens")
    real_to_synthetic: float | None = Field(
        None, gt=0, description="R_ref : S (e.g. 4 for the paper's real-web : synthetic = 4 : 1)"
    )
    ratio_reference: Literal["real", "web", "code", "math"] = Field(
        "real", description="what real_to_synthetic compares with S: all real data or one kind"
    )

    @model_validator(mode="after")
    def _at_most_one(self) -> "MixSpec":
        given = [
            k
            for k in ("synthetic_effective_tokens", "synthetic_epochs", "real_to_synthetic")
            if getattr(self, k) is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of synthetic_effective_tokens, synthetic_epochs, "
                f"real_to_synthetic (got {given})"
            )
        if self.ratio_reference != "real" and self.real_to_synthetic is None:
            raise ValueError("ratio_reference only applies with real_to_synthetic")
        return self

    @property
    def sets_synthetic(self) -> bool:
        return any(
            v is not None
            for v in (self.synthetic_effective_tokens, self.synthetic_epochs, self.real_to_synthetic)
        )
