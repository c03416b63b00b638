"""Vendi score (Friedman & Dieng 2023), dual form, for L2-normalised embeddings X (n x d).

VS = exp(-sum_i l_i log l_i), l_i the eigenvalues of K / n with K = X X^T (cosine similarity, unit
diagonal). K / n and X^T X / n share their non-zero eigenvalues, so the d x d matrix suffices: O(n d^2)
instead of O(n^2 d). Ranges from 1 (all texts identical) to min(n, d) (orthogonal embeddings).
"""

from __future__ import annotations

import numpy as np

from workflow_scripts.diversity.base import MetricResult


def normalise(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def vendi_score(embeddings: np.ndarray) -> MetricResult:
    x = normalise(embeddings)
    n = len(x)
    if n == 0:
        return MetricResult(0.0, {"texts": 0})
    eigenvalues = np.linalg.eigvalsh(x.T @ x / n)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    eigenvalues = eigenvalues / eigenvalues.sum()
    positive = eigenvalues[eigenvalues > 1e-12]
    entropy = float(-(positive * np.log(positive)).sum())
    return MetricResult(float(np.exp(entropy)), {"texts": n, "dimensions": int(x.shape[1]), "entropy": entropy,
                                                 "form": "dual (eigenvalues of X^T X / n)"})
