"""Transformers backend: batched, left-padded sampling on CPU or GPU, with JSON-schema constraints.

The decoding loop is our own (a few lines over the model's forward pass with a KV cache) rather than
``model.generate`` because every row needs its own seeded random generator (one seed per request,
independent of which other requests share the batch) and its own grammar state (requests in one batch
may carry different schemas). Constraints use outlines-core: the schema becomes a regex, the regex an
``Index`` over the tokenizer's vocabulary, and each row's ``Guide`` masks the logits at every step.
With ``structured_output: form`` a row instead fills the schema as a line-by-line form
(:mod:`workflow_scripts.llm.form`): the backend writes the labels, the model writes the values.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any, Iterator, Sequence

from workflow_scripts.config.generate import BackendOptions
from workflow_scripts.llm.form import FormError, FormField, assemble, clean_text_value, form_fields
from workflow_scripts.llm.types import LLMRequest, LLMResponse, finish_response, in_request_order, model_identity

log = logging.getLogger(__name__)

_FALLBACK_ROLE = {"system": "System", "user": "User", "assistant": "Assistant"}


def _schema_regex(schema: dict[str, Any]) -> str:
    from outlines_core.json_schema import build_regex_from_schema

    # No free whitespace between JSON tokens: a random model would otherwise pad forever.
    return build_regex_from_schema(json.dumps(schema), whitespace_pattern="")


class _FormRow:
    """One row's progress through a form: forced label tokens, then a value, field after field."""

    def __init__(self, fields: list[FormField], encode, newline_ids: set[int]) -> None:
        self.fields, self.encode, self.newline_ids = fields, encode, newline_ids
        self.index = 0
        self.values: list[Any] = []
        self.value_ids: list[int] = []
        self.value_text = ""
        self.forced: list[int] = encode(f"{fields[0].label}:")
        self.choice_ids = self._choices() if fields[0].kind == "choice" else None

    @property
    def field(self) -> FormField:
        return self.fields[self.index]

    @property
    def done(self) -> bool:
        return self.index >= len(self.fields)

    @property
    def last_field(self) -> bool:
        return self.index == len(self.fields) - 1

    def _choices(self) -> list[list[int]]:
        return [self.encode(f" {text}") for text in self.field.choice_texts]

    def allowed(self) -> tuple[str, set[int]] | None:
        """None: free; ("only", ids): the next token must be one of ids; ("not", ids): anything but ids."""
        if self.forced:
            return ("only", {self.forced[0]})
        if self.field.kind == "choice":
            depth = len(self.value_ids)
            return ("only", {ids[depth] for ids in self.choice_ids if ids[:depth] == self.value_ids
                             and len(ids) > depth})
        return None if self.started else ("not", self.newline_ids)

    @property
    def started(self) -> bool:
        """The value holds more than white space (before that, a line break would leave it empty)."""
        return bool(self.value_text.strip())

    def advance(self, token: int, decode, is_eos: bool) -> None:
        if self.forced:
            self.forced.pop(0)
            return
        field = self.field
        if field.kind == "choice":
            self.value_ids.append(token)
            complete = [i for i, ids in enumerate(self.choice_ids) if ids == self.value_ids]
            if complete:
                self._finish_value(field.choices[complete[0]], ended_line=False)
            return
        text = decode(self.value_ids + ([] if is_eos else [token]))
        ended = is_eos or token in self.newline_ids
        if not is_eos:
            self.value_ids.append(token)
        self.value_text = text
        too_long = field.max_chars is not None and len(text.strip()) >= field.max_chars
        if ended or too_long or len(self.value_ids) >= _value_token_cap(field):
            self._finish_value(clean_text_value(text, field.max_chars), ended_line=ended and not is_eos)

    def _finish_value(self, value: Any, ended_line: bool) -> None:
        self.values.append(value)
        self.value_ids, self.value_text = [], ""
        self.index += 1
        if self.done:
            return
        self.forced = self.encode(("" if ended_line else "\n") + f"{self.field.label}:")
        self.choice_ids = self._choices() if self.field.kind == "choice" else None


def _penalize_repeats(logits, live: list[int], generated: list[list[int]], penalties: list[float]):
    """CTRL's repetition penalty over each row's generated tokens (positive logits divided, others multiplied)."""
    import torch

    for position, row in enumerate(live):
        if penalties[row] == 1 or not generated[row]:
            continue
        seen = torch.tensor(sorted(set(generated[row])), dtype=torch.long, device=logits.device)
        values = logits[position, seen]
        logits[position, seen] = torch.where(values > 0, values / penalties[row], values * penalties[row])
    return logits


def _value_token_cap(field: FormField) -> int:
    # ~4 characters per token in English; the character bound usually ends the value first
    return 2 * (field.max_chars or 1000) // 3 + 4


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
        self._newline_ids: set[int] | None = None

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

    def _lines_end(self) -> set[int]:
        """Tokens whose text holds a line break (they end a form value); their index tensors with it."""
        if self._newline_ids is None:
            import torch

            vocab = self.tokenizer.get_vocab()
            self._newline_ids = {i for i in vocab.values() if "\n" in self.tokenizer.decode([i])}
            self._newline_index = torch.tensor(sorted(self._newline_ids), dtype=torch.long, device=self.device)
            self._eos_index = torch.tensor(sorted(self.eos_ids), dtype=torch.long, device=self.device)
        return self._newline_ids

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _form_row(self, schema: dict[str, Any]) -> "_FormRow | str":
        try:
            return _FormRow(form_fields(schema), self._encode, self._lines_end())
        except FormError as error:
            return f"the schema cannot be filled as a form: {error}"

    # --- generation ---------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        return in_request_order(self.generate_as_completed(requests), len(requests))

    def generate_as_completed(self, requests: Sequence[LLMRequest]) -> Iterator[tuple[int, LLMResponse]]:
        """Answers batch by batch, as each batch finishes."""
        prompts = [self._prompt_ids(r) for r in requests]
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        size = self.options.batch_size
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            yield from zip(chunk, self._generate_batch([requests[i] for i in chunk], [prompts[i] for i in chunk]))

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

        guides: list[Any] = []
        generated: list[list[int]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        errors: list[str | None] = [None] * n
        for row, request in enumerate(requests):
            if request.json_schema is None:
                guides.append(None)
            elif self.options.structured_output == "form":
                form = self._form_row(request.json_schema)
                guides.append(form if isinstance(form, _FormRow) else None)
                if not isinstance(form, _FormRow):
                    finish[row], errors[row] = "error", form
            else:
                from outlines_core import Guide

                guides.append(Guide(self._index(request.json_schema)))
        # CPU generators, one per request: the draw of a row never depends on its batch neighbours.
        generators = [torch.Generator().manual_seed(int(r.seed) % (2**63)) for r in requests]
        temperature = torch.tensor([r.temperature for r in requests], dtype=torch.float32, device=device)
        top_p = torch.tensor([r.top_p for r in requests], dtype=torch.float32, device=device)
        penalties = [float(r.repetition_penalty) for r in requests]
        limits = [r.max_new_tokens for r in requests]
        live = [row for row in range(n) if finish[row] is None]  # batch position -> row still decoding

        with torch.inference_mode():
            # logits of the last position only: full-width prefill logits cost batch x prompt x vocab floats
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_position = positions[:, -1:] + 1
            if len(live) < n:  # rows refused before decoding leave the batch
                index = torch.tensor(live, dtype=torch.long, device=device)
                cache.batch_select_indices(index)
                attention, next_position, logits = attention[index], next_position[index], logits[index]
            for _step in range(max(limits) if live else 0):
                logits = _penalize_repeats(logits, live, generated, penalties)
                tokens = self._sample_rows(logits, live, guides, generators, temperature, top_p)
                keep = []
                for position, row in enumerate(live):
                    finish[row], errors[row] = self._advance_row(tokens[position], guides[row], generated[row],
                                                                 limits[row])
                    if finish[row] is None:
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
            form = guides[row]
            if isinstance(form, _FormRow) and form.done:
                text = json.dumps(assemble(request.json_schema, form.values), ensure_ascii=False)
            if finish[row] == "error":
                responses.append(LLMResponse(text=text, prompt_tokens=len(prompts[row]),
                                             completion_tokens=len(generated[row]), finish_reason="error",
                                             error=errors[row]))
                continue
            responses.append(finish_response(text, request, len(prompts[row]), len(generated[row]),
                                             finish[row] or "length"))
        return responses

    def _advance_row(self, token: int, guide: Any, generated: list[int], limit: int
                     ) -> tuple[str | None, str | None]:
        """Take one token into a row; (finish reason, error) once the row is done, else (None, None)."""
        if token < 0:
            return "error", "the grammar allows no token (bad schema?)"
        if isinstance(guide, _FormRow):
            guide.advance(token, self.tokenizer.decode, token in self.eos_ids)
            generated.append(token)
            done = guide.done
        elif token in self.eos_ids:
            return "stop", None
        else:
            generated.append(token)
            if guide is not None:
                guide.advance(token_id=token, return_tokens=False)
            done = guide is not None and guide.is_finished()
        if done:
            return "stop", None
        return ("length", None) if len(generated) >= limit else (None, None)

    def _sample_rows(self, logits, live: list[int], guides, generators, temperature, top_p) -> list[int]:
        """One token per live row (-1 when its constraint allows none): masked, tempered, nucleus-sampled
        over the ``sampling_top_k`` most likely tokens."""
        import torch

        count, vocab = logits.shape
        rows = torch.tensor(live, dtype=torch.long, device=logits.device)
        logits = self._mask(logits, live, guides)
        dead = ~torch.isfinite(logits).any(-1)
        temps = temperature[rows]
        greedy = temps == 0
        top_logits, top_ids = torch.topk(logits, min(self.options.sampling_top_k, vocab), dim=-1)
        probs = torch.softmax(top_logits / torch.where(greedy, 1.0, temps)[:, None], dim=-1)
        # nucleus: keep the smallest prefix whose mass reaches top_p (the first token always stays)
        kept = (probs.cumsum(-1) - probs) < top_p[rows][:, None]
        probs = probs * kept
        cdf = probs.cumsum(-1)
        draws = torch.stack([torch.rand((), generator=generators[row]) for row in live]).to(logits.device)
        index = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None]).clamp(max=top_ids.shape[1] - 1)
        sampled = top_ids.gather(1, index).squeeze(1)
        chosen = torch.where(greedy, top_ids[:, 0], sampled)
        chosen = torch.where(dead, torch.full_like(chosen, -1), chosen)
        return chosen.tolist()

    def _mask(self, logits, live: list[int], guides):
        """Logits with every token the row's grammar or form forbids set to -inf."""
        import torch

        count, vocab = logits.shape
        grammar = [p for p, row in enumerate(live) if guides[row] is not None and not isinstance(guides[row], _FormRow)]
        if grammar:
            words = (vocab + 31) // 32
            bitmask = torch.full((count, words), -1, dtype=torch.int32)
            for p in grammar:
                bitmask[p].zero_()
                guides[live[p]].write_mask_into(bitmask[p].data_ptr(), words, bitmask.element_size())
            shifts = torch.arange(32, dtype=torch.int32)
            allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().reshape(count, -1)[:, :vocab]
            logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
        for p, row in enumerate(live):
            form = guides[row]
            if not isinstance(form, _FormRow):
                continue
            rule = form.allowed()
            if rule is not None and rule[0] == "only":
                keep = torch.full((vocab,), float("-inf"), device=logits.device)
                keep[list(rule[1])] = 0.0
                logits[p] = logits[p] + keep
                continue
            if rule is not None:  # ("not", line breaks): the value has not begun
                logits[p, self._newline_index] = float("-inf")
            # end of text only once the last value has begun; before that the form goes on
            if not (form.last_field and form.started):
                logits[p, self._eos_index] = float("-inf")
        return logits
