"""Lexical diversity metrics: tokenisation, hashed n-gram sets, hand-checked values, streaming."""

from __future__ import annotations

import gzip
import math
import random
from collections import Counter

import numpy as np
import pytest

from workflow_scripts.diversity.compression import CompressionRatio
from workflow_scripts.diversity.context_length import ContextLength
from workflow_scripts.diversity.hashsets import DistinctHashes, DocumentFrequencies
from workflow_scripts.diversity.lexical import LexicalScorer, score_texts
from workflow_scripts.diversity.ngram_diversity import NgramDiversity
from workflow_scripts.diversity.self_repetition import SelfRepetition
from workflow_scripts.diversity.tokens import HFTokenizer, WhitespaceTokenizer

WS = WhitespaceTokenizer()


def run(metric, texts, batches=1):
    size = max(1, math.ceil(len(texts) / batches))
    for start in range(0, len(texts), size):
        chunk = texts[start:start + size]
        metric.update(WS(chunk), chunk)
    return metric.result()


# --- reference implementations (plain Python, strings) ---------------------------------------------------


def ngrams(tokens, n):
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def ref_ngram_diversity(texts, max_n=4):
    score = 0.0
    for n in range(1, max_n + 1):
        grams = [g for t in texts for g in ngrams(t.split(), n)]
        score += len(set(grams)) / len(grams) if grams else 0.0
    return score


def ref_ngram_diversity_corpus(texts, max_n=4):
    stream = [token for t in texts for token in t.split()]
    return sum(len(set(ngrams(stream, n))) / len(ngrams(stream, n)) for n in range(1, max_n + 1)
               if ngrams(stream, n))


def ref_self_repetition(texts, n=4):
    sets = [set(ngrams(t.split(), n)) for t in texts]
    frequency = Counter(g for s in sets for g in s)
    return sum(math.log1p(sum(1 for g in s if frequency[g] > 1)) for s in sets) / len(texts)


def ref_self_repetition_shaib(texts, n=4):
    sets = [set(ngrams(t.split(), n)) for t in texts]
    frequency = Counter(g for s in sets for g in s)
    return sum(math.log1p(sum(frequency[g] - 1 for g in s)) for s in sets) / len(texts)


def random_corpus(seed, docs=60, vocab=40):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(docs)]


# --- tokens -----------------------------------------------------------------------------------------------


def test_whitespace_tokens_match_str_split():
    texts = ["hello world  foo", "", "  a\u00a0b\u3000c ", "hello", "x\ty\nz hello", "é café\u2009crème"]
    batch = WS(texts)
    assert batch.lengths.tolist() == [len(t.split()) for t in texts]
    tokens = [tok for t in texts for tok in t.split()]
    by_token: dict[str, int] = {}
    for token, value in zip(tokens, batch.hashes.tolist()):
        assert by_token.setdefault(token, value) == value  # equal tokens, equal hashes
    assert len(set(batch.hashes.tolist())) == len(set(tokens))  # distinct tokens, distinct hashes
    assert batch.n_bytes == sum(len(t.encode()) for t in texts)


def test_ngrams_stay_inside_documents_and_select():
    batch = WS(["a b c", "d", "e f"])
    grams, docs = batch.ngram_hashes(2)
    assert docs.tolist() == [0, 0, 2]  # "c d" and "d e" would span documents
    assert len(batch.ngram_hashes(3)[0]) == 1
    sub = batch.select(np.array([0, 2]))
    assert sub.lengths.tolist() == [3, 2]
    assert sub.hashes.tolist() == WS(["a b c", "e f"]).hashes.tolist()


def test_hf_tokenizer_counts_ids(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    tokenizer = HFTokenizer(str(tmp_path / "tok"))
    texts = ["The river carries sediment.", "print(add(2, 3))"]
    batch = tokenizer(texts)
    expected = [len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert batch.lengths.tolist() == expected
    result = score_texts([texts], ["context_length"], tokenizer)["context_length"]
    assert result.value == pytest.approx(sum(expected) / 2)
    assert result.details["tokenizer"] == str(tmp_path / "tok")


# --- hashed sets ------------------------------------------------------------------------------------------


def test_distinct_hashes_merge_like_a_set():
    rng = np.random.default_rng(0)
    store, reference = DistinctHashes(min_merge=8), set()
    for _ in range(50):
        values = rng.integers(0, 300, size=rng.integers(0, 40)).astype(np.uint64)
        store.add(values)
        reference.update(values.tolist())
    assert len(store) == len(reference)
    assert store.nbytes <= 16 * len(reference) + 8 * 64


def test_document_frequencies_single_document_counts():
    frequencies = DocumentFrequencies(min_merge=1)
    u = np.uint64
    frequencies.add(np.array([1, 2, 3], u), np.array([0, 0, 1]), np.array([1, 1, 1]))
    frequencies.add(np.array([2, 4], u), np.array([2, 2]), np.array([1, 2]))
    # 1 only in doc 0; 2 in docs 0 and 2; 3 only in doc 1; 4 in two docs of the second batch
    assert frequencies.single_document_counts(3).tolist() == [1, 1, 0]
    assert frequencies.document_counts(np.array([4, 1, 2], u)).tolist() == [2, 1, 2]
    assert len(frequencies) == 4


# --- hand-checked values ----------------------------------------------------------------------------------


def test_context_length_by_hand():
    result = run(ContextLength(), ["a b c", "d e", ""])
    assert result.value == pytest.approx(5 / 3)
    assert result.details["max_tokens"] == 3 and result.details["min_tokens"] == 0


def test_ngram_diversity_by_hand():
    # "a b a b": unigrams 2/4, bigrams {ab, ba} 2/3, trigrams 2/2, 4-grams 1/1
    assert run(NgramDiversity(4), ["a b a b"]).value == pytest.approx(0.5 + 2 / 3 + 1 + 1)
    # two identical two-word texts, inside documents: unigrams 2/4, bigrams 1/2, no tri/4-grams (counted as 0)
    result = run(NgramDiversity(4, scope="document"), ["a b", "a b"])
    assert result.value == pytest.approx(1.0)
    assert result.details["total_per_n"] == {"1": 4, "2": 2, "3": 0, "4": 0}
    # on the concatenated corpus (Shaib et al.; the default) they read as "a b a b", even split across batches
    for batches in (1, 2):
        result = run(NgramDiversity(4), ["a b", "a b"], batches)
        assert result.value == pytest.approx(0.5 + 2 / 3 + 1 + 1)
        assert result.details["total_per_n"] == {"1": 4, "2": 3, "3": 2, "4": 1}


def test_self_repetition_by_hand():
    texts = ["a b c d e", "a b c d x", "p q r s", "short"]
    # texts 1 and 2 share one 4-gram (a b c d); the others share none
    for variant in ("shaib", "shared_ngrams"):
        assert run(SelfRepetition(4, variant), texts).value == pytest.approx(2 * math.log(2) / 4)
        # a 4-gram repeated inside one text is not shared with another text
        assert run(SelfRepetition(4, variant), ["a b c d a b c d", "z y x w"]).value == 0.0
    # where the variants differ: Shaib et al. count the OTHER texts holding each n-gram
    texts = ["a b c d e", "a b c d e", "a b c d x"]
    # abcd is in 3 texts, bcde in 2: texts 1 and 2 score log(1 + 2 + 1), text 3 log(1 + 2 + 0)
    assert run(SelfRepetition(4), texts).value == pytest.approx((2 * math.log(4) + math.log(3)) / 3)
    # shared_ngrams: texts 1 and 2 have 2 shared 4-grams, text 3 has 1
    assert run(SelfRepetition(4, "shared_ngrams"), texts).value == pytest.approx((2 * math.log(3) + math.log(2)) / 3)


def test_compression_ratio_matches_gzip():
    texts = ["abc def"] * 100 + ["xyz"]
    result = run(CompressionRatio(9), texts, batches=3)
    data = " ".join(texts).encode()
    assert result.details["original_bytes"] == len(data)
    assert result.value == pytest.approx(len(data) / len(gzip.compress(data, 9, mtime=0)))


def assert_ngram_metrics_match_references(texts, batches):
    assert run(NgramDiversity(4), texts, batches).value == pytest.approx(ref_ngram_diversity_corpus(texts))
    assert run(NgramDiversity(4, scope="document"), texts, batches).value == pytest.approx(ref_ngram_diversity(texts))
    assert run(SelfRepetition(4), texts, batches).value == pytest.approx(ref_self_repetition_shaib(texts))
    assert run(SelfRepetition(4, "shared_ngrams"), texts, batches).value == pytest.approx(ref_self_repetition(texts))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_matches_reference_for_any_batching(seed):
    texts = random_corpus(seed)
    for batches in (1, 7):
        assert_ngram_metrics_match_references(texts, batches)


def test_self_repetition_merges_across_many_batches():
    texts = random_corpus(5, docs=200, vocab=12)
    metric = SelfRepetition(4, "shared_ngrams")
    metric.frequencies._min_merge = 4  # force many merges
    assert run(metric, texts, batches=50).value == pytest.approx(ref_self_repetition(texts))
    assert run(SelfRepetition(4), texts, batches=50).value == pytest.approx(ref_self_repetition_shaib(texts))


def test_near_duplicates_score_less_diverse_on_every_lexical_metric():
    rng = random.Random(0)
    vocabulary = [f"word{i}" for i in range(2000)]
    varied = [" ".join(rng.choice(vocabulary) for _ in range(40)) for _ in range(100)]
    template = varied[0].split()
    near_duplicates = []
    for _ in range(100):
        words = list(template)
        words[rng.randrange(len(words))] = rng.choice(vocabulary)
        near_duplicates.append(" ".join(words))
    names = ["context_length", "self_repetition", "ngram_diversity", "compression_ratio"]
    a = score_texts([varied], names, WS)
    b = score_texts([near_duplicates], names, WS)
    assert b["ngram_diversity"].value < a["ngram_diversity"].value      # higher = more diverse
    assert b["self_repetition"].value > a["self_repetition"].value      # higher = more repetitive
    assert b["compression_ratio"].value > a["compression_ratio"].value  # higher = more redundant
    # context length describes length, not diversity: equal here by construction
    assert a["context_length"].value == b["context_length"].value == 40


def test_lexical_scorer_shares_one_tokenisation():
    texts = random_corpus(3)
    scorer = LexicalScorer(["context_length", "ngram_diversity"], WS)
    scorer.update(texts[:30])
    scorer.update(texts[30:])
    results = scorer.results()
    assert results["ngram_diversity"].value == pytest.approx(ref_ngram_diversity_corpus(texts))
    assert results["context_length"].value == pytest.approx(sum(len(t.split()) for t in texts) / len(texts))


# --- long documents: windows and pieces, bounded memory ------------------------------------------------------


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of 16 tokens and pieces of 40 bytes, so that short test texts take the long-document paths."""
    from workflow_scripts.diversity import ngram_diversity, self_repetition, tokens

    for module in (tokens, ngram_diversity, self_repetition):
        monkeypatch.setattr(module, "WINDOW_TOKENS", 16, raising=False)
    monkeypatch.setattr(tokens, "PIECE_BYTES", 40)
    monkeypatch.setattr(self_repetition, "_PAIRS_PER_PART", 5)


@pytest.mark.parametrize("seed", [0, 3])
def test_long_documents_in_windows_score_exactly_as_whole(seed, small_windows):
    texts = random_corpus(seed, docs=30) + [" ".join(random_corpus(seed + 10, docs=20))] + random_corpus(seed + 1, 5)
    assert WS(texts).lengths.tolist() == [len(t.split()) for t in texts]
    for batches in (1, 4):
        assert_ngram_metrics_match_references(texts, batches)
        data = " ".join(texts).encode()
        assert run(CompressionRatio(9), texts, batches).details["original_bytes"] == len(data)


def test_a_long_single_line_document_is_scored_in_bounded_memory(tmp_path):
    """The standalone scorer's lexical metrics on one 5 MB line: the old code peaked at ~65 bytes per byte
    of text (tokenisation tables and whole-document n-gram arrays); now the working memory is the distinct
    n-gram sets and one window."""
    import tracemalloc

    from workflow_scripts.diversity.__main__ import main

    rng = np.random.default_rng(0)
    vocabulary = np.array([f"w{i}" for i in range(30_000)])
    corpus = tmp_path / "one_line.txt"
    with open(corpus, "w") as handle:
        written = 0
        while written < 5_000_000:
            chunk = " ".join(vocabulary[rng.zipf(1.2, 100_000) % len(vocabulary)]) + " "
            handle.write(chunk)
            written += len(chunk)
        handle.write("\n")
    tracemalloc.start()
    try:
        assert main([str(corpus), "--metrics", "lexical", "--gzip-level", "1", "--quiet",
                     "--output", str(tmp_path / "scores.json")]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = corpus.stat().st_size
    assert peak < 25 * size, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.1f} MB document"
