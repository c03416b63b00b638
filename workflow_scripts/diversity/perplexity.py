"""Perplexity of texts under a causal LM (a local directory or hub id), and the perplexity gap.

Each text is tokenised without special tokens, prefixed with the tokenizer's BOS token when it has one
(so the first word is scored too) and cut to ``max_tokens`` (only the text's first ``max_tokens`` x 64
characters are tokenized, so a huge document costs no more than a short one). Per text we keep the summed negative
log-likelihood and the number of predicted tokens; a corpus' perplexity is
exp(sum NLL / sum predicted tokens) (token-weighted; ``details`` also has the mean of per-text
perplexities). Higher = the scorer finds the texts less predictable.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from workflow_scripts.diversity.base import MetricResult, head_for_tokens

log = logging.getLogger(__name__)


@dataclass
class TextLosses:
    """Per-text summed NLL (nats) and predicted-token counts."""

    nll: np.ndarray      # float64
    tokens: np.ndarray   # int64

    def subset(self, rows: np.ndarray) -> "TextLosses":
        return TextLosses(self.nll[rows], self.tokens[rows])

    def perplexity(self) -> float:
        total = int(self.tokens.sum())
        return math.exp(float(self.nll.sum()) / total) if total else float("nan")

    def result(self, model: str) -> MetricResult:
        scored = self.tokens > 0
        per_text = np.exp(self.nll[scored] / self.tokens[scored])
        return MetricResult(self.perplexity(), {
            "model": model, "texts": int(len(self.tokens)), "predicted_tokens": int(self.tokens.sum()),
            "mean_text_perplexity": float(per_text.mean()) if scored.any() else float("nan"),
            "mean_nll": float(self.nll.sum() / max(1, self.tokens.sum())),
        })


class PerplexityScorer:
    def __init__(self, source: str, *, max_tokens: int = 512, batch_size: int = 8, device: str = "auto",
                 revision: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.source = source
        self.device = torch.device(device)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=dtype)
        self.model.to(self.device).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and limit < self.max_tokens:
            self.max_tokens = int(limit)

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer(head_for_tokens(text, self.max_tokens), add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if bos is not None:
            ids = [bos] + ids
        return ids[: self.max_tokens]

    def score(self, texts: Sequence[str]) -> TextLosses:
        import torch

        encoded = [self._ids(t) for t in texts]
        nll = np.zeros(len(texts), dtype=np.float64)
        counts = np.array([max(0, len(ids) - 1) for ids in encoded], dtype=np.int64)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = [i for i in order[start:start + self.batch_size] if counts[i] > 0]
                if not rows:
                    continue
                width = max(len(encoded[i]) for i in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[r, : len(encoded[i])] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                targets = ids[:, 1:]
                losses = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
                ).view(targets.shape) * mask[:, 1:]
                for r, i in enumerate(rows):
                    nll[i] = float(losses[r].sum())
        return TextLosses(nll, counts)

    def score_batches(self, batches: Iterable[Sequence[str]]) -> TextLosses:
        parts = [self.score(texts) for texts in batches]
        if not parts:
            return TextLosses(np.zeros(0), np.zeros(0, dtype=np.int64))
        return TextLosses(np.concatenate([p.nll for p in parts]), np.concatenate([p.tokens for p in parts]))


def perplexity_gap(a: TextLosses, b: TextLosses, names: tuple[str, str]) -> MetricResult:
    ppl_a, ppl_b = a.perplexity(), b.perplexity()
    return MetricResult(abs(ppl_a - ppl_b), {"scorer": names[0], "reference": names[1],
                                             "perplexity_scorer": ppl_a, "perplexity_reference": ppl_b})
