"""K-means cluster score on sentence embeddings.

The paper (after Shaib et al.) clusters embeddings with K-means but gives no score formula. Ours:
**the mean Euclidean distance of each L2-normalised embedding to the centroid of its cluster**
(higher = texts spread further around their cluster centres = more diverse). With k clusters on n
texts it is 0 when every text has an identical twin per cluster and approaches the spread of the
corpus as k << n. ``details`` also gives the inertia ratio (within-cluster sum of squares / total sum
of squares around the global mean) and the entropy of the cluster sizes. k is capped at the number
of distinct texts (more clusters than texts is an error); compare corpora at equal n and k.

Two implementations: ``sklearn`` (k-means++ initialisation, exact Lloyd iterations; the default, fine
up to ~10^5 texts and k ~ 10^2 on CPU) and ``torch`` (Lloyd iterations as chunked matrix products on the
GPU when there is one, initialised with k distinct random texts; for the paper's scale, k = 10K on
1M texts).
"""

from __future__ import annotations

import numpy as np

from workflow_scripts.core.artifacts import InputError
from workflow_scripts.diversity.base import MetricResult
from workflow_scripts.diversity.vendi import normalise


def kmeans_score(embeddings: np.ndarray, k: int, seed: int = 0, n_init: int = 1, max_iter: int = 100,
                 backend: str = "sklearn", device: str = "auto") -> MetricResult:
    x = normalise(embeddings)
    n = len(x)
    if n == 0:
        return MetricResult(0.0, {"texts": 0, "k": 0})
    if k > n:
        raise InputError(f"kmeans_k ({k}) is more than the {n} texts to cluster: lower diversity.embedding.kmeans_k "
                         "(--kmeans-k) or score more texts")
    distinct = len(np.unique(np.round(x, 6), axis=0))
    clusters = max(1, min(k, distinct))  # identical texts cannot form separate clusters
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=clusters, n_init=n_init, max_iter=max_iter, random_state=seed).fit(x)
        centres, labels = model.cluster_centers_, model.labels_
    elif backend == "torch":
        centres, labels = torch_kmeans(x, clusters, seed, max_iter, device)
    else:
        raise ValueError(f"unknown K-means backend {backend!r}")
    distances = np.linalg.norm(x - centres[labels], axis=1)
    inertia = float((distances ** 2).sum())
    total = float(((x - x.mean(axis=0)) ** 2).sum())
    sizes = np.bincount(labels, minlength=clusters) / n
    sizes = sizes[sizes > 0]
    return MetricResult(float(distances.mean()), {
        "score": "mean distance to the assigned centroid (L2-normalised embeddings)",
        "texts": n, "k": clusters, "k_requested": k, "seed": seed, "backend": backend,
        "inertia": inertia,
        "inertia_ratio": inertia / total if total > 0 else 0.0,
        "cluster_size_entropy": float(-(sizes * np.log(sizes)).sum()),
    })


def torch_kmeans(x: np.ndarray, k: int, seed: int, max_iter: int, device: str = "auto",
                 chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm with chunked distance products; empty clusters keep their previous centre."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    data = torch.as_tensor(x, dtype=torch.float32, device=device)
    n = data.shape[0]
    start = np.random.default_rng(seed).choice(n, size=k, replace=False)
    centres = data[torch.as_tensor(start, device=device)].clone()
    labels = torch.full((n,), -1, dtype=torch.long, device=device)
    for _ in range(max_iter):
        squared = (centres * centres).sum(1)
        new = torch.empty_like(labels)
        for lo in range(0, n, chunk):
            block = data[lo:lo + chunk]
            new[lo:lo + chunk] = torch.argmin(squared[None, :] - 2 * block @ centres.T, dim=1)
        if torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(centres).index_add_(0, labels, data)
        counts = torch.bincount(labels, minlength=k).to(data.dtype)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres.double().cpu().numpy(), labels.cpu().numpy()
