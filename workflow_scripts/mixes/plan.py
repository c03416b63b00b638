"""The arithmetic of a mix: effective tokens, epochs and shares of every source (pure; no I/O).

See :mod:`workflow_scripts.config.mixes` for how budget, real tokens and the synthetic target combine.
Impossible requests raise :class:`MixError` with the numbers that make them impossible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from workflow_scripts.config import ConfigError
from workflow_scripts.config.mixes import KINDS, MixConfig, MixSpec

SYNTHETIC = "synthetic"
_EPS = 1e-9


class MixError(ConfigError):
    """The configuration asks for a mix that cannot be built from the data at hand."""


@dataclass(frozen=True)
class SourceStats:
    """A tokenized source as the mix sees it."""

    name: str
    origin: Literal["real", "synthetic"]
    unique_tokens: int  # tokens in the .bin, EOD included
    documents: int = 0
    prefix: str = ""


@dataclass(frozen=True)
class PlannedSource:
    name: str
    origin: str
    prefix: str
    documents: int
    unique_tokens: int
    effective_tokens: float
    epochs: float
    share: float  # of the budget, also its blend weight
    included: bool  # False: weight 0, not in the blend


@dataclass(frozen=True)
class MixPlan:
    total_tokens: int
    seq_length: int
    sources: list[PlannedSource]
    notes: list[str] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return math.ceil(self.total_tokens / self.seq_length)

    @property
    def blend(self) -> list[PlannedSource]:
        return [s for s in self.sources if s.included]

    def source(self, name: str) -> PlannedSource:
        return next(s for s in self.sources if s.name == name)


def _fmt(tokens: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(tokens) >= size:
            return f"{tokens / size:.4g}{unit}"
    return f"{tokens:.4g}"


def plan_mix(
    real: dict[str, SourceStats],
    synthetic: SourceStats | None,
    config: MixConfig,
    spec: MixSpec = MixSpec(),
    where: str = "mix",
) -> MixPlan:
    """Solve the budget, split it over the sources and check the result is possible."""
    weights = {k: float(config.real_weights.get(k, 0.0)) for k in KINDS}
    total_weight = sum(weights.values())
    shares = {k: w / total_weight for k, w in weights.items() if w > 0} if total_weight > 0 else {}
    for kind in shares:
        if kind not in real or real[kind].unique_tokens <= 0:
            raise MixError(
                f"{where}: mixes.real_weights gives {kind!r} a share but the real tokens have no "
                f"{kind!r} data (they have {sorted(k for k, s in real.items() if s.unique_tokens)})"
            )
    if synthetic is None and spec.sets_synthetic:
        raise MixError(
            f"{where}: the experiment's mix asks for synthetic data but it has no synthetic tokens"
        )
    if not shares and synthetic is None:
        raise MixError(
            f"{where}: every weight is zero (mixes.real_weights) and there is no synthetic data: "
            "nothing to train on"
        )
    if synthetic is not None and synthetic.unique_tokens <= 0:
        raise MixError(f"{where}: the synthetic corpus has no tokens")

    budget, real_tokens, notes = config.budget_tokens, config.real_tokens, []
    if synthetic is None:
        synth = 0.0
        real_total = float(budget if budget is not None else real_tokens)  # type: ignore[arg-type]
        notes.append(f"real data only: {_fmt(real_total)} effective tokens")
    elif not shares:
        if spec.real_to_synthetic is not None:
            raise MixError(f"{where}: real_to_synthetic needs real data, but every real weight is zero")
        fixed = _fixed_synthetic(synthetic, spec)
        if spec.sets_synthetic and abs(fixed - budget) > 0.5:  # type: ignore[operator]
            raise MixError(
                f"{where}: with no real data the synthetic corpus must fill the budget of "
                f"{_fmt(budget)} tokens, but the mix asks for {_fmt(fixed)}"
            )  # type: ignore[arg-type]
        synth, real_total = float(budget), 0.0  # type: ignore[arg-type]
        notes.append("synthetic data only: it fills the budget")
    elif spec.real_to_synthetic is not None:
        share = 1.0 if spec.ratio_reference == "real" else shares.get(spec.ratio_reference, 0.0)
        if share <= 0:
            raise MixError(
                f"{where}: ratio_reference {spec.ratio_reference!r} has weight zero in mixes.real_weights"
            )
        ratio = spec.real_to_synthetic / share  # all real : synthetic
        if budget is not None and real_tokens is not None:
            raise MixError(
                f"{where}: a real_to_synthetic ratio with both a budget (total_tokens/total_steps) and "
                "mixes.real_tokens is over-determined: drop one of them"
            )
        if budget is not None:
            synth = budget / (1 + ratio)
            real_total = budget - synth
        else:
            real_total = float(real_tokens)  # type: ignore[arg-type]
            synth = real_total / ratio
        notes.append(
            f"{spec.ratio_reference} : synthetic = {spec.real_to_synthetic:g} : 1 "
            f"(all real : synthetic = {ratio:.4g} : 1)"
        )
    else:
        synth = _fixed_synthetic(synthetic, spec)
        what = (
            f"{spec.synthetic_epochs:g} epoch(s) of the synthetic corpus"
            if spec.synthetic_epochs is not None
            else f"{_fmt(synth)} effective synthetic tokens"
            if spec.synthetic_effective_tokens is not None
            else "one pass of the synthetic corpus (no synthetic target set)"
        )
        if budget is not None and real_tokens is not None:
            scale = budget / (real_tokens + synth)
            notes.append(
                f"{what} next to {_fmt(real_tokens)} real tokens, scaled by {scale:.4g} to the "
                f"budget of {_fmt(budget)}"
            )
            real_total, synth = real_tokens * scale, synth * scale
        elif budget is not None:
            if synth > budget + _EPS:
                raise MixError(
                    f"{where}: the budget of {_fmt(budget)} tokens is below the requested synthetic "
                    f"share ({what}: {_fmt(synth)} tokens)"
                )
            real_total = budget - synth
            notes.append(f"{what}; real data fills the rest of the budget")
        else:
            real_total = float(real_tokens)  # type: ignore[arg-type]
            notes.append(f"{what} next to {_fmt(real_total)} real tokens")
    total = budget if budget is not None else round(real_total + synth)
    if total < config.seq_length:
        raise MixError(
            f"{where}: the budget of {total} tokens is less than one sequence ({config.seq_length})"
        )
    if shares and real_total <= _EPS:
        raise MixError(
            f"{where}: the synthetic share fills the whole budget of {_fmt(total)} tokens; nothing is "
            "left for the real data that mixes.real_weights asks for"
        )

    sources: list[PlannedSource] = []
    for kind in KINDS:
        if kind not in real and kind not in shares:
            continue
        stats = real.get(kind, SourceStats(kind, "real", 0))
        effective = real_total * shares.get(kind, 0.0)
        sources.append(_planned(stats, effective, total, kind in shares))
    if synthetic is not None:
        sources.append(_planned(replace(synthetic, name=SYNTHETIC), synth, total, True))
    _check(sources, config, where)
    return MixPlan(total_tokens=int(total), seq_length=config.seq_length, sources=sources, notes=notes)


def _fixed_synthetic(synthetic: SourceStats, spec: MixSpec) -> float:
    if spec.synthetic_effective_tokens is not None:
        return float(spec.synthetic_effective_tokens)
    epochs = spec.synthetic_epochs if spec.synthetic_epochs is not None else 1.0
    return epochs * synthetic.unique_tokens


def _planned(stats: SourceStats, effective: float, total: float, included: bool) -> PlannedSource:
    epochs = effective / stats.unique_tokens if stats.unique_tokens else 0.0
    return PlannedSource(
        name=stats.name,
        origin=stats.origin,
        prefix=stats.prefix,
        documents=stats.documents,
        unique_tokens=stats.unique_tokens,
        effective_tokens=effective,
        epochs=epochs,
        share=effective / total,
        included=included,
    )


def _check(sources: list[PlannedSource], config: MixConfig, where: str) -> None:
    used = [s for s in sources if s.included]
    short = [s for s in used if s.effective_tokens < config.seq_length]
    if short:
        raise MixError(
            f"{where}: "
            + "; ".join(
                f"source {s.name!r} gets {s.effective_tokens:.0f} tokens, less than one sequence of "
                f"{config.seq_length}"
                for s in short
            )
            + ": raise the budget or the source's share"
        )
    if not config.allow_repetition:
        repeated = [s for s in used if s.epochs > 1 + 1e-6]
        if repeated:
            raise MixError(
                f"{where}: mixes.allow_repetition is false but "
                + "; ".join(
                    f"source {s.name!r} would need {s.epochs:.3f} epochs "
                    f"({_fmt(s.effective_tokens)} effective "
                    f"from {_fmt(s.unique_tokens)} unique tokens)"
                    for s in repeated
                )
                + ": lower the budget or allow repetition"
            )
    if not config.allow_partial_epochs:
        partial = [s for s in used if s.epochs < 1 - 1e-6]
        if partial:
            raise MixError(
                f"{where}: mixes.allow_partial_epochs is false but the budget is below one pass of "
                + "; ".join(
                    f"source {s.name!r} ({_fmt(s.effective_tokens)} effective of "
                    f"{_fmt(s.unique_tokens)} unique tokens, {s.epochs:.3f} epochs)"
                    for s in partial
                )
                + ": raise the budget or allow partial epochs"
            )
