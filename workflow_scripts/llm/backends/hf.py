"""Transformers backend: batched, left-padded sampling on CPU or GPU, with JSON-schema constraints.

The decoding loop is our own (a few lines over the model's forward pass with a KV cache) rather than
``model.generate`` because every row needs its own seeded random generator (one seed per request,
independent of which other requests share the batch) and its own grammar state (requests in one batch
may carry different schemas). Constraints use outlines-core: the schema becomes a regex, the regex an
``Index`` over the tokenizer's vocabulary, and each row's ``Guide`` masks the logits at every step.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any, Sequence

from workflow_scripts.config.generate import BackendOptions
from workflow_scripts.llm.types import LLMRequest, LLMResponse, finish_response, model_identity

log = logging.getLogger(__name__)

_FALLBACK_ROLE = {"system": "System", "user": "User", "assistant": "Assistant"}


def _schema_regex(schema: dict[str, Any]) -> str:
    from outlines_core.json_schema import build_regex_from_schema

    # No free whitespace between JSON tokens: a random model would otherwise pad forever.
    return build_regex_from_schema(json.dumps(schema), whitespace_pattern="")


class HFBackend:
    """A causal LM loaded with ``from_pretrained`` (local folder or hub id)."""

    def __init__(self, source: str, revision: str | None = None,
                 options: BackendOptions = BackendOptions()) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = options
        self.source = source
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = options.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        self.model = AutoModelForCausalLM.from_pretrained(source, revision=revision,
                                                          dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = {int(i) for i in eos_ids if i is not None}
        self._identity = model_identity("transformers", source, revision)
        self._vocabulary = None
        self._indexes: OrderedDict[str, Any] = OrderedDict()

    def identity(self) -> str:
        return self._identity

    # --- prompts ------------------------------------------------------------------------------------------

    def _prompt_ids(self, request: LLMRequest) -> list[int]:
        messages = [dict(m) for m in request.messages]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "".join(f"{_FALLBACK_ROLE[m['role']]}: {m['content']}\n" for m in messages) + "Assistant: "
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # --- constraints --------------------------------------------------------------------------------------

    def _outlines_vocabulary(self):
        if self._vocabulary is None:
            from outlines_core import Vocabulary

            special = set(self.tokenizer.all_special_ids) | {
                i for i in getattr(self.tokenizer, "added_tokens_decoder", {})}
            eos_id = self.tokenizer.eos_token_id
            formatted: dict[str, list[int]] = {}
            for token, token_id in self.tokenizer.get_vocab().items():
                if token_id in special or token_id in self.eos_ids:
                    continue
                text = self.tokenizer.convert_tokens_to_string([token])
                if token.startswith("\u2581") and not text.startswith(" "):  # sentencepiece word marker
                    text = " " + text
                if text:
                    formatted.setdefault(text, []).append(token_id)
            self._vocabulary = Vocabulary(eos_id, formatted)
        return self._vocabulary

    def _index(self, schema: dict[str, Any]):
        from outlines_core import Index

        key = json.dumps(schema, sort_keys=True)
        if key not in self._indexes:
            self._indexes[key] = Index(_schema_regex(schema), self._outlines_vocabulary())
            while len(self._indexes) > 16:
                self._indexes.popitem(last=False)
        self._indexes.move_to_end(key)
        return self._indexes[key]

    # --- generation ---------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        prompts = [self._prompt_ids(r) for r in requests]
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        results: list[LLMResponse | None] = [None] * len(requests)
        size = self.options.batch_size
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            for i, response in zip(chunk, self._generate_batch([requests[i] for i in chunk],
                                                               [prompts[i] for i in chunk])):
                results[i] = response
        return [r for r in results if r is not None]

    def _generate_batch(self, requests: list[LLMRequest], prompts: list[list[int]]) -> list[LLMResponse]:
        import torch

        n = len(requests)
        device = self.device
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((n, width), pad, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)

        guides = []
        for request in requests:
            if request.json_schema is None:
                guides.append(None)
            else:
                from outlines_core import Guide

                guides.append(Guide(self._index(request.json_schema)))
        # CPU generators, one per request: the draw of a row never depends on its batch neighbours.
        generators = [torch.Generator().manual_seed(int(r.seed) % (2**63)) for r in requests]
        temperature = torch.tensor([r.temperature for r in requests], dtype=torch.float32, device=device)
        top_p = torch.tensor([r.top_p for r in requests], dtype=torch.float32, device=device)
        generated: list[list[int]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        errors: list[str | None] = [None] * n
        limits = [r.max_new_tokens for r in requests]
        live = list(range(n))  # original row of each batch position still being decoded

        with torch.inference_mode():
            # logits of the last position only: full-width prefill logits cost batch x prompt x vocab floats
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_position = positions[:, -1:] + 1
            for _step in range(max(limits)):
                tokens = self._sample_rows(logits, live, guides, generators, temperature, top_p)
                keep = []
                for position, row in enumerate(live):
                    token = tokens[position]
                    if token < 0:
                        finish[row], errors[row] = "error", "the grammar allows no token (bad schema?)"
                        continue
                    if token in self.eos_ids:
                        finish[row] = "stop"
                        continue
                    generated[row].append(token)
                    guide = guides[row]
                    if guide is not None:
                        guide.advance(token_id=token, return_tokens=False)
                        if guide.is_finished():
                            finish[row] = "stop"
                            continue
                    if len(generated[row]) >= limits[row]:
                        finish[row] = "length"
                        continue
                    keep.append(position)
                if not keep:
                    break
                step_tokens = torch.tensor([tokens[p] for p in range(len(live))], dtype=torch.long, device=device)
                if len(keep) < len(live):
                    # Drop finished rows from the batch (and the KV cache) so they cost nothing more.
                    index = torch.tensor(keep, dtype=torch.long, device=device)
                    cache.batch_select_indices(index)
                    attention, next_position = attention[index], next_position[index]
                    step_tokens = step_tokens[index]
                    live = [live[p] for p in keep]
                attention = torch.cat([attention, attention.new_ones((len(live), 1))], 1)
                out = self.model(input_ids=step_tokens[:, None], attention_mask=attention,
                                 position_ids=next_position, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_position = next_position + 1

        responses = []
        for row, request in enumerate(requests):
            text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
            if finish[row] == "error":
                responses.append(LLMResponse(text=text, prompt_tokens=len(prompts[row]),
                                             completion_tokens=len(generated[row]), finish_reason="error",
                                             error=errors[row]))
                continue
            responses.append(finish_response(text, request, len(prompts[row]), len(generated[row]),
                                             finish[row] or "length"))
        return responses

    def _sample_rows(self, logits, live: list[int], guides, generators, temperature, top_p) -> list[int]:
        """One token per live row (-1 when its grammar allows none): masked, tempered, nucleus-sampled."""
        import torch

        count, vocab = logits.shape
        rows = torch.tensor(live, dtype=torch.long, device=logits.device)
        constrained = [p for p, row in enumerate(live) if guides[row] is not None]
        if constrained:
            words = (vocab + 31) // 32
            bitmask = torch.full((count, words), -1, dtype=torch.int32)
            for p in constrained:
                bitmask[p].zero_()
                guides[live[p]].write_mask_into(bitmask[p].data_ptr(), words, bitmask.element_size())
            shifts = torch.arange(32, dtype=torch.int32)
            allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().reshape(count, -1)[:, :vocab]
            logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
        dead = ~torch.isfinite(logits).any(-1)
        temps = temperature[rows]
        greedy = temps == 0
        probs = torch.softmax(logits / torch.where(greedy, 1.0, temps)[:, None], dim=-1)
        sorted_probs, sorted_ids = torch.sort(probs, dim=-1, descending=True)
        # nucleus: keep the smallest prefix whose mass reaches top_p (the first token always stays)
        kept = (sorted_probs.cumsum(-1) - sorted_probs) < top_p[rows][:, None]
        sorted_probs = sorted_probs * kept
        cdf = sorted_probs.cumsum(-1)
        draws = torch.stack([torch.rand((), generator=generators[row]) for row in live]).to(logits.device)
        index = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None]).clamp(max=vocab - 1)
        sampled = sorted_ids.gather(1, index).squeeze(1)
        chosen = torch.where(greedy, sorted_ids[:, 0], sampled)
        chosen = torch.where(dead, torch.full_like(chosen, -1), chosen)
        return chosen.tolist()
