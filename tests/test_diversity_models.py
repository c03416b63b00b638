"""Model-based diversity metrics: perplexity (tiny local Llama), embeddings, K-means, Vendi."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workflow_scripts.diversity.kmeans import kmeans_score
from workflow_scripts.diversity.perplexity import PerplexityScorer, TextLosses, perplexity_gap
from workflow_scripts.diversity.vendi import vendi_score

torch.set_num_threads(1)


# --- Vendi ------------------------------------------------------------------------------------------------


def test_vendi_identical_and_orthogonal():
    assert vendi_score(np.ones((5, 3))).value == pytest.approx(1.0)
    assert vendi_score(np.eye(4)).value == pytest.approx(4.0)
    # two orthogonal directions, each repeated: two "effective" texts
    assert vendi_score(np.array([[1, 0], [1, 0], [0, 1], [0, 1.0]])).value == pytest.approx(2.0)


def test_vendi_dual_form_matches_primal():
    x = np.random.default_rng(0).normal(size=(30, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    eigenvalues = np.clip(np.linalg.eigvalsh(x @ x.T / len(x)), 0, None)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    primal = math.exp(-(eigenvalues * np.log(eigenvalues)).sum())
    assert vendi_score(x).value == pytest.approx(primal, rel=1e-9)


# --- K-means ----------------------------------------------------------------------------------------------


def test_kmeans_score_by_hand():
    # two pairs of points, each pair symmetric around its centroid at distance sin(0.1) after normalising
    a, b = 0.1, 1.2
    x = np.array([[math.cos(a), math.sin(a)], [math.cos(-a), math.sin(-a)],
                  [math.cos(b + a), math.sin(b + a)], [math.cos(b - a), math.sin(b - a)]])
    result = kmeans_score(x, k=2, seed=0)
    assert result.value == pytest.approx(math.sin(a), rel=1e-6)
    assert result.details["k"] == 2
    identical = kmeans_score(np.ones((6, 3)), k=4)
    assert identical.value == pytest.approx(0.0) and identical.details["k"] == 1  # capped at distinct texts


def test_torch_kmeans_agrees_with_sklearn():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(4, 8)) * 3
    x = np.repeat(centres, 25, axis=0) + 0.05 * rng.normal(size=(100, 8))
    a = kmeans_score(x, 4, seed=0)
    b = kmeans_score(x, 4, seed=0, backend="torch", device="cpu")
    assert b.details["backend"] == "torch"
    assert b.value == pytest.approx(a.value, rel=0.05)  # well-separated clusters: same partition


def test_kmeans_spread_corpus_scores_higher():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16))
    tight = np.repeat(centres, 20, axis=0) + 0.01 * rng.normal(size=(60, 16))
    spread = np.repeat(centres, 20, axis=0) + 0.5 * rng.normal(size=(60, 16))
    assert kmeans_score(spread, 3).value > kmeans_score(tight, 3).value


# --- embeddings -------------------------------------------------------------------------------------------


def test_builtin_minilm_embedder_offline():
    from workflow_scripts.diversity.embeddings import Embedder

    embedder = Embedder(device="cpu", batch_size=4)
    vectors = embedder.embed(["A cat sits on the mat.", "A cat sits on the mat.", "Stock prices fell today."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] == pytest.approx(1.0, abs=1e-5)
    assert vectors[0] @ vectors[2] < 0.9


# --- perplexity -------------------------------------------------------------------------------------------


def test_perplexity_matches_manual_computation(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = ["The river carries sediment to the delta.", "for i in range(10): print(i)", "x"]
    scorer = PerplexityScorer(str(tiny_llama_dir), max_tokens=64, batch_size=2, device="cpu")
    losses = scorer.score(texts)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    total_nll, total_tokens = 0.0, 0
    for i, text in enumerate(texts):
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        nll = float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        assert losses.nll[i] == pytest.approx(nll, rel=1e-4)
        assert losses.tokens[i] == ids.shape[1] - 1
        total_nll += nll
        total_tokens += ids.shape[1] - 1
    assert losses.perplexity() == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)
    result = losses.result("tiny")
    assert result.details["predicted_tokens"] == total_tokens
    gap = perplexity_gap(losses, losses, ("tiny", "tiny"))
    assert gap.value == 0.0


def test_perplexity_gap_and_subset():
    a = TextLosses(np.array([2.0, 4.0]), np.array([2, 2]))
    b = TextLosses(np.array([1.0, 1.0]), np.array([2, 2]))
    assert a.perplexity() == pytest.approx(math.exp(1.5))
    assert perplexity_gap(a, b, ("a", "b")).value == pytest.approx(math.exp(1.5) - math.exp(0.5))
    assert a.subset(np.array([1])).perplexity() == pytest.approx(math.exp(2.0))
