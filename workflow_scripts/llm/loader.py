"""Build an LLM backend from the config's model registry: where the weights are, and who runs them.

:func:`load_backend` imports a backend module only when it is needed (no torch import at start);
:class:`LazyBackend` knows its identity (part of every cache key) without loading anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from workflow_scripts.llm.types import LLMBackend, LLMRequest, LLMResponse, answers_as_they_come, model_identity

if TYPE_CHECKING:
    from workflow_scripts.config import ModelSpec
    from workflow_scripts.config.generate import BackendOptions


def resolve_model_source(spec: "ModelSpec", local_models_dir: Path | str | None) -> str:
    """The directory or hub id the weights are loaded from."""
    if spec.local is not None:
        if local_models_dir is None:
            raise FileNotFoundError(
                f"model {spec.local!r} is built by the local_models stage: pass its artifact directory "
                "(--models DIR)"
            )
        folder = Path(local_models_dir) / spec.local
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: the local_models artifact has no model "
                                    f"{spec.local!r}")
        return str(folder)
    assert spec.path is not None
    if spec.builtin is not None:
        from workflow_scripts.llm.builtin import BUILTIN_DIR, cached_builtin_dir

        if local_models_dir is not None and (Path(local_models_dir) / BUILTIN_DIR / spec.builtin).is_dir():
            return str(Path(local_models_dir) / BUILTIN_DIR / spec.builtin)  # converted by the local_models stage
        return str(cached_builtin_dir(spec.path))
    return spec.path


def spec_identity(spec: "ModelSpec", local_models_dir: Path | str | None = None) -> str:
    """The identity :func:`load_backend` would give, without loading anything."""
    if spec.backend == "openai":
        source = spec.path or ""
    else:
        source = resolve_model_source(spec, local_models_dir)
    return model_identity(spec.backend, source, spec.revision)


BATCH_STATE_DIR = "batches"


def batch_state_dir(cache_dir: Path | str) -> Path:
    """Where the openai backend's batch mode records the batches it submitted: next to the request cache they
    fill (``<cache>/batches``), so a killed job finds them again."""
    return Path(cache_dir) / BATCH_STATE_DIR


class LazyBackend:
    """Knows its identity up front, loads the model only when a request actually reaches it
    (a fully cached rerun never loads weights)."""

    def __init__(self, spec: "ModelSpec", local_models_dir: Path | str | None = None,
                 options: "BackendOptions | dict[str, Any] | None" = None,
                 state_dir: Path | str | None = None) -> None:
        self.spec, self.local_models_dir, self.options = spec, local_models_dir, options
        self.state_dir = state_dir
        self._identity = spec_identity(spec, local_models_dir)
        self._backend: LLMBackend | None = None

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def identity(self) -> str:
        return self._identity

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        if not requests:
            return []
        return self._loaded().generate(requests)

    def generate_as_completed(self, requests: Sequence[LLMRequest]) -> Iterator[tuple[int, LLMResponse]]:
        """The loaded backend's answers as they arrive (all at the end for one that cannot stream)."""
        if requests:
            yield from answers_as_they_come(self._loaded(), requests)

    def _loaded(self) -> LLMBackend:
        if self._backend is None:
            self._backend = load_backend(self.spec, self.local_models_dir, self.options, self.state_dir)
            if self._backend.identity() != self._identity:
                raise RuntimeError(f"backend identity {self._backend.identity()!r} differs from the "
                                   f"expected {self._identity!r}")
        return self._backend


def load_backend(spec: "ModelSpec", local_models_dir: Path | str | None = None,
                 options: "BackendOptions | dict[str, Any] | None" = None,
                 state_dir: Path | str | None = None) -> LLMBackend:
    """Build the backend a ``ModelSpec`` names (``transformers``, ``vllm`` or ``openai``).

    ``local: NAME`` loads ``<local_models_dir>/NAME``; ``path`` is a local directory or a hub id (or, for
    ``openai``, the model name the endpoint serves). ``options`` holds backend settings (device, batch
    size, endpoint URL, API-key variable, concurrency, tensor parallelism ...). ``state_dir`` is where the
    openai backend's batch mode records its batches (see :func:`batch_state_dir`).
    """
    from workflow_scripts.config.generate import BackendOptions

    if options is None:
        options = BackendOptions()
    elif isinstance(options, dict):
        options = BackendOptions.model_validate(options)
    if spec.backend == "openai":
        if spec.local is not None:
            raise ValueError("the openai backend serves a model by name: give 'path' (the served model id)")
        from workflow_scripts.llm.backends.openai_api import OpenAIBackend

        return OpenAIBackend(model=spec.path or "", revision=spec.revision, options=options,
                             structured_output=spec.structured_output, state_dir=state_dir)
    source = resolve_model_source(spec, local_models_dir)
    if spec.backend == "transformers":
        from workflow_scripts.llm.backends.hf import HFBackend

        return HFBackend(source, revision=spec.revision, options=options)
    if spec.backend == "vllm":
        from workflow_scripts.llm.backends.vllm_offline import VLLMBackend

        return VLLMBackend(source, revision=spec.revision, options=options)
    raise ValueError(f"unknown backend {spec.backend!r}")
