"""Mixes: real web/code/math by weight + an experiment's synthetic corpus, with exact epochs per source.

- ``plan``: pure arithmetic (:func:`plan.plan_mix`, :class:`plan.MixError` for impossible requests).
- ``stage``: the mix stage (``python -m workflow_scripts.mixes``).
- ``reader``: what other stages import: the ``blend.json`` contract and Megatron-core datasets built from it.
The configuration sections live in :mod:`workflow_scripts.config.mixes`.
"""
