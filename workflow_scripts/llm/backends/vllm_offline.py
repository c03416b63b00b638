"""vLLM offline backend (GPU): ``LLM`` + ``SamplingParams`` + structured outputs.

Deliberately thin and imported lazily: vLLM is GPU-only, pins its own torch/transformers, and cannot be
installed in the CPU environment, so it runs from its own pinned environment (see the generation
stage's notes) and is exercised here only through the interface the other backends share. Written
against vLLM's documented offline API: ``LLM(model, revision, tensor_parallel_size,
enable_prefix_caching, ...)``, ``LLM.chat(conversations, sampling_params)`` with one ``SamplingParams``
per request (its own seed), and ``StructuredOutputsParams(json=schema)`` (vLLM >= 0.12; older releases
call it ``GuidedDecodingParams`` / ``guided_decoding``).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from workflow_scripts.config.generate import BackendOptions
from workflow_scripts.llm.types import LLMRequest, LLMResponse, finish_response, model_identity

log = logging.getLogger(__name__)


def _import_vllm():
    try:
        import vllm
    except ImportError as error:  # pragma: no cover - only on GPU machines with the vLLM environment
        raise ImportError(
            "the 'vllm' backend needs vLLM (GPU only), which is not installed in this environment; use the "
            "generation environment file for vLLM, or the 'transformers' backend"
        ) from error
    return vllm


def _structured(schema: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams keyword for JSON-schema decoding, whichever spelling this vLLM has."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # pragma: no cover - vLLM < 0.12
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
    return {"structured_outputs": StructuredOutputsParams(json=schema)}


class VLLMBackend:  # pragma: no cover - needs a GPU and vLLM
    def __init__(self, source: str, revision: str | None = None,
                 options: BackendOptions = BackendOptions()) -> None:
        vllm = _import_vllm()
        self.source = source
        self.options = options
        kwargs: dict[str, Any] = dict(
            model=source,
            revision=revision,
            tensor_parallel_size=options.tensor_parallel_size,
            enable_prefix_caching=options.enable_prefix_caching,
            gpu_memory_utilization=options.gpu_memory_utilization,
            dtype=options.dtype,
        )
        if options.max_model_len:
            kwargs["max_model_len"] = options.max_model_len
        self.llm = vllm.LLM(**kwargs)
        self._identity = model_identity("vllm", source, revision)

    def identity(self) -> str:
        return self._identity

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        from vllm import SamplingParams

        conversations = [[dict(m) for m in r.messages] for r in requests]
        params = []
        for r in requests:
            extra = _structured(r.json_schema) if r.json_schema is not None else {}
            params.append(SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                                         seed=int(r.seed) % (2**63), repetition_penalty=r.repetition_penalty,
                                         **extra))
        outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
        responses = []
        for request, output in zip(requests, outputs):
            completion = output.outputs[0]
            finish = "length" if completion.finish_reason == "length" else "stop"
            responses.append(finish_response(completion.text, request, len(output.prompt_token_ids or []),
                                             len(completion.token_ids), finish))
        return responses
