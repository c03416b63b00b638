"""Diversity scores of a corpus: the paper's LLM Cluster-agent and the baseline metrics.

Public API (import from the submodules; this package import stays light):

- ``scoring.score_corpus(Corpus, DiversityConfig, Resources) -> Report``: every configured metric with the
  bootstrap over seeds; ``corpus.Corpus`` reads JSONL / Parquet / text.
- Lexical, streaming (``lexical.LexicalScorer``, ``tokens.WhitespaceTokenizer`` / ``HFTokenizer``):
  ``context_length``, ``self_repetition``, ``ngram_diversity``, ``compression_ratio``.
- Model-based: ``perplexity.PerplexityScorer`` (perplexity, gap), ``embeddings.Embedder`` with
  ``kmeans.kmeans_score`` and ``vendi.vendi_score``.
- ``cluster_agent.agent.ClusterAgent`` (the five stages) and ``cluster_agent.score.score_records``
  (D from the raw round records under any convention).
- Command lines: ``python -m workflow_scripts.diversity INPUT ...`` (standalone scorer),
  ``python -m workflow_scripts.diversity.stage`` (pipeline stage, one experiment) and
  ``python -m workflow_scripts.diversity.summary`` (table over experiments).
"""
