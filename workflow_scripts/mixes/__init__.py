"""Mixes: real web/code/math by weight + an experiment's synthetic corpus, with exact epochs per source.

Public API (torch/Megatron only inside :func:`build_gpt_datasets`):

- :class:`MixConfig` (section ``mixes``), :class:`MixSpec` (``experiments.<name>.mix``).
- :func:`plan_mix` -> :class:`MixPlan` (pure arithmetic; :class:`MixError` for impossible requests).
- :class:`BlendFile`, :func:`read_blend` - the ``blend.json`` contract.
- :func:`build_gpt_datasets` - Megatron-core (train, valid, test) datasets from a ``blend.json``.
"""

from importlib import import_module
from typing import Any

# Names resolve on first use, so that ``workflow_scripts.core.config`` can import ``mixes.config`` while it is
# itself being imported (the other modules import the assembled schema).
_EXPORTS = {
    "BLEND_FILE": "blend",
    "BlendFile": "blend",
    "read_blend": "blend",
    "MixConfig": "config",
    "MixSpec": "config",
    "parse_token_count": "config",
    "build_gpt_datasets": "megatron",
    "single_process_group": "megatron",
    "MixError": "plan",
    "MixPlan": "plan",
    "PlannedSource": "plan",
    "SourceStats": "plan",
    "plan_mix": "plan",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
