"""Requests in flight per API provider, as Snakemake resources shared by concurrent jobs.

A job whose stage calls an API model (``backend: openai``) declares ``api_<provider>=<max_concurrency>``: the
requests it keeps in flight. The provider is the host (and port) of the model's ``base_url``, sanitised to a
resource name: ``https://api.openai.com/v1`` -> ``api_openai_com``, ``http://127.0.0.1:8011/v1`` ->
``api_127_0_0_1_8011``. A global cap (``snakemake --resources api_openai_com=64``, set in the profiles) then
bounds the sum over the jobs that run at the same time, on one machine or across a SLURM allocation, because
Snakemake's scheduler does not start a job whose resources no longer fit. A job in ``backend.mode: batch``
declares 0: it uploads request files instead of holding connections.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

RESOURCE_PREFIX = "api_"
API_STAGES = ("topic_extraction", "generate", "diversity")


def provider_resource(base_url: str) -> str:
    """The Snakemake resource name of an endpoint: ``api_`` + its host[:port], lower case, ``[a-z0-9_]``."""
    parts = urlsplit(base_url if "//" in base_url else f"//{base_url}")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"base_url {base_url!r} names no host")
    host = host.removeprefix("api.")
    name = f"{host}_{parts.port}" if parts.port else host
    return RESOURCE_PREFIX + re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def _models_of(config: Any, stage: str, experiment: str | None) -> list[tuple[str, Any]]:
    """(model name, its backend options) of the API calls a stage's job makes."""
    from workflow_scripts.config.generate import extraction_model

    if stage == "generate" and experiment is not None:
        spec = config.experiments[experiment].synthetic
        return [] if spec is None else [(spec.generator, config.generate.backend_for(spec.generator))]
    if stage == "topic_extraction":
        try:
            model = extraction_model(config)
        except (ValueError, StopIteration):
            return []
        return [] if model is None else [(model, config.generate.backend_for(model))]
    if stage == "diversity":
        judge = config.diversity.model_names().get("judge")
        return [] if judge is None else [(judge, config.diversity.cluster_agent.backend)]
    return []


def api_demand(config: Any, stage: str, experiment: str | None = None) -> dict[str, int]:
    """``{api_<provider>: requests in flight}`` of one job (empty when it calls no API model)."""
    demand: dict[str, int] = {}
    for model, options in _models_of(config, stage, experiment):
        if model in config.models and config.models[model].backend == "openai":
            name = provider_resource(options.base_url)
            # a Batch API job keeps no requests in flight: the provider queues its files under separate limits
            in_flight = 0 if getattr(options, "mode", "online") == "batch" else options.max_concurrency
            demand[name] = max(demand.get(name, 0), in_flight)
    return demand


def api_providers(config: Any) -> list[str]:
    """Every provider resource some job of this configuration may declare (the rules declare them all)."""
    names: set[str] = set()
    for stage in API_STAGES:
        experiments = config.synthetic_experiments() if stage in ("generate", "diversity") else [None]
        for experiment in experiments:
            names.update(api_demand(config, stage, experiment))
    return sorted(names)
