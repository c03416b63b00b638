"""Configuration of the generation stage (the ``generate:`` section), light: pydantic only.

The paper (arXiv 2410.15226) reports no sampling parameters, personas per prompt, topics per
multi-topic prompt or style-assignment rule: each is a value here, with the default we chose.
It is the ``generate`` section of ``workflow_scripts.config.PipelineConfig``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from workflow_scripts.config.base import Name, Section

STYLES = ("narrative_textbook", "college_textbook", "blog_post", "wikihow")
OPTION_MARKERS = ("number_dot", "number_paren", "letter_dot", "letter_paren", "roman", "bullet", "none")
ANSWER_FORMS = ("label", "text", "label_and_text")

# Config keys the generation stage reads ({experiment} and {generator} are filled per experiment;
# use resolve_param_keys). Every key must exist literally in params.yaml for DVC.
PARAM_KEYS = (
    "seed",
    "experiments.{experiment}.synthetic",
    "models.{generator}",
    "generate.decoding",
    "generate.models",
    "generate.prompts",
    "generate.json_schema",
    "generate.render",
    "generate.max_attempts",
    "generate.requests_per_batch",
    "generate.plan_chunk_size",
    "generate.rows_per_shard",
)


class Decoding(Section):
    """Sampling parameters (the paper reports none; these are our choices)."""

    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(1536, gt=0, description="must exceed the longest schema-valid document")
    repetition_penalty: float = Field(1.0, ge=1, le=2, description="local backends only (transformers, vLLM): "
                                      "divides the logits of tokens already generated; 1 = off")


class BackendOptions(Section):
    """How a backend runs a model. Fields of other backends are ignored."""

    # transformers
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1' ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(8, gt=0, description="sequences per forward pass (transformers)")
    structured_output: Literal["grammar", "form"] = Field(
        "grammar", description="transformers: 'grammar' constrains the whole JSON document (outlines-core); "
        "'form' writes the schema's labels itself and lets the model fill one line per field (small models)")
    sampling_top_k: int = Field(256, gt=0, description="transformers: nucleus sampling runs over the k most "
                                "likely tokens (a full-vocabulary sort per step is slow on CPU)")
    # openai-compatible HTTP
    base_url: str = Field("https://api.openai.com/v1", description="endpoint root (…/v1)")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key")
    max_concurrency: int = Field(8, gt=0, description="requests in flight at once")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0, description="retries on 429 / 408 / 409 / 5xx / timeouts / connection "
                             "errors; in batch mode, resubmissions of a batch's failed or expired lines")
    backoff_initial_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    send_seed: bool = Field(True, description="send the per-request seed (OpenAI: best-effort determinism)")
    strict_schema: bool = Field(True, description="response_format json_schema with strict=true")
    mode: Literal["online", "batch"] = Field(
        "online", description="openai: 'online' sends each request as it is asked (max_concurrency in flight); "
        "'batch' sends all of a call's requests as Batch API jobs (JSONL upload, results within "
        "completion_window, at the Batch API's price); submitted batch ids are recorded under the request "
        "cache's batches/ folder, so a killed job resumes polling instead of submitting again")
    batch_poll_interval_s: float = Field(30.0, gt=0, description="batch mode: seconds between status checks")
    batch_max_requests: int = Field(50_000, gt=0, description="batch mode: requests per batch (the Batch API "
                                    "takes up to 50,000 lines and 200 MB per file)")
    completion_window: Literal["24h"] = Field("24h", description="batch mode: the Batch API's completion window")
    # vLLM offline
    tensor_parallel_size: int = Field(1, gt=0)
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, gt=0)


class ModelOptions(Section):
    """Per-model settings, keyed by the registry name in ``models``."""

    decoding: Decoding | None = Field(None, description="replaces generate.decoding for this model")
    backend: BackendOptions = BackendOptions()


class SchemaBounds(Section):
    """Bounds of the requested JSON document. A random model never chooses to stop, so for constrained
    decoding every string is bounded with a pattern (``string_mode: pattern``); API models get plain
    strings (``free``)."""

    min_passages: int = Field(3, ge=1)
    max_passages: int = Field(5, ge=1)
    string_mode: Literal["pattern", "free"] = "pattern"
    max_nuance_chars: int = Field(120, gt=0)
    max_passage_chars: int = Field(1500, gt=0)
    max_question_chars: int = Field(400, gt=0)
    max_option_chars: int = Field(200, gt=0)
    max_explanation_chars: int = Field(1000, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "SchemaBounds":
        if self.min_passages > self.max_passages:
            raise ValueError("min_passages must not exceed max_passages")
        return self


class PromptConfig(Section):
    personas_path: str = Field("builtin", description="JSONL of {\"persona\": ...}; 'builtin' = shipped file")
    personas_per_prompt: int = Field(5, gt=0, description="candidate audiences offered per prompt")
    topics_per_prompt: int = Field(3, ge=2, description="topics in one multi-topic prompt")
    multi_topic_companions: Literal["random", "same_domain"] = Field(
        "same_domain", description="how the extra topics are drawn: any sampled topic, or one sharing the "
        "first path component when there is one")
    styles: list[Literal[STYLES]] = Field(list(STYLES), min_length=1)  # type: ignore[valid-type]
    style_assignment: Literal["random", "round_robin"] = Field(
        "random", description="random: seeded per (topic, generation); round_robin: generation g of a topic "
        "gets style (g + offset(topic)) mod n_styles, so every topic sees every style")
    max_keywords: int = Field(12, gt=0, description="keywords per topic shown in the prompt")


class RenderConfig(Section):
    """JSON -> training text. Every choice is drawn per record with a seeded generator."""

    passage_separator: str = "\n"
    block_separator: str = Field("\n\n", description="between passages, question, options, answer, explanation")
    question_lead_ins: list[str] = Field(
        ["", "Q:", "Question:", "Challenge:", "Quiz:", "Check your understanding:", "Problem:"], min_length=1)
    option_markers: list[Literal[OPTION_MARKERS]] = Field(list(OPTION_MARKERS), min_length=1)  # type: ignore
    answer_forms: list[Literal[ANSWER_FORMS]] = Field(list(ANSWER_FORMS), min_length=1)  # type: ignore
    answer_prefixes: list[str] = Field(
        ["Answer:", "Correct answer:", "The answer is", "Solution:", "A:"], min_length=1)
    explanation_prefixes: list[str] = Field(
        ["Explanation:", "Step by step:", "Reasoning:", "Why:", ""], min_length=1)
    explanation_drop_probability: float = Field(0.25, ge=0, le=1)


class TopicExtractionConfig(Section):
    """Pages of text -> topic path + keywords per page (the paper's topic source)."""

    model: Name | None = Field(None, description="registry model; default: the first synthetic generator")
    max_pages: int | None = Field(None, gt=0, description="use only the first N pages (None: all)")
    max_page_chars: int = Field(4000, gt=0, description="page text is cut to this many characters")
    max_depth: int = Field(4, ge=2, description="path components (Domain/.../leaf)")
    min_keywords: int = Field(3, ge=1)
    max_keywords: int = Field(8, ge=1)
    max_component_chars: int = Field(40, gt=0)
    max_keyword_chars: int = Field(30, gt=0)
    decoding: Decoding = Decoding(temperature=0.0, top_p=1.0, max_new_tokens=512)


class GenerationConfig(Section):
    decoding: Decoding = Decoding()
    models: dict[Name, ModelOptions] = Field({}, description="per registry model: decoding, backend options")
    prompts: PromptConfig = PromptConfig()
    json_schema: SchemaBounds = SchemaBounds()
    render: RenderConfig = RenderConfig()
    max_attempts: int = Field(3, gt=0, description="tries per generation before it is recorded as a failure")
    requests_per_batch: int = Field(32, gt=0, description="requests handed to the backend at once; for API "
                                    "models several times backend.max_concurrency, or the endpoint idles "
                                    "at the end of every call (answers are cached as they arrive either way)")
    plan_chunk_size: int = Field(4096, gt=0, description="generations planned, asked and written at a time "
                                 "(bounds memory at paper scale)")
    rows_per_shard: int = Field(50_000, gt=0)
    topic_extraction: TopicExtractionConfig = TopicExtractionConfig()
    budget_usd: float | None = Field(
        None, ge=0, description="most dollars one experiment's generations may cost at the generator's "
        "models.NAME.price (answers from the request cache count too); before each batch of requests the stage "
        "adds an upper-bound estimate and stops, publishing nothing, when it would exceed this. Raise it and "
        "rerun to resume from the cache. null: no cap. Not part of any fingerprint")

    def decoding_for(self, model: str) -> Decoding:
        options = self.models.get(model)
        return options.decoding if options and options.decoding else self.decoding

    def backend_for(self, model: str) -> BackendOptions:
        options = self.models.get(model)
        return options.backend if options else BackendOptions()


def resolve_param_keys(config: Any, experiment: str) -> list[str]:
    """PARAM_KEYS with {experiment} and {generator} filled for one experiment."""
    spec = config.experiments[experiment].synthetic
    if spec is None:
        raise ValueError(f"experiment {experiment!r} has no synthetic data to generate")
    return [key.format(experiment=experiment, generator=spec.generator) for key in PARAM_KEYS]


# The config keys the topic-extraction stage reads ({model}: the extraction model).
TOPIC_EXTRACTION_PARAM_KEYS = ("seed", "models.{model}", "generate.models", "generate.topic_extraction",
                               "generate.max_attempts")


def extraction_model(config: Any) -> str:
    """The model that extracts topics: the configured one, else the first experiment's generator."""
    extraction = config.generate.topic_extraction
    if extraction.model is not None:
        if extraction.model not in config.models:
            raise ValueError(f"generate.topic_extraction.model: {extraction.model!r} is not in 'models'")
        return extraction.model
    for name in config.generated_experiments():
        spec = config.experiments[name].synthetic
        assert spec is not None
        return spec.generator
    raise ValueError("generate.topic_extraction.model is not set and no experiment names a generator")


def topic_extraction_param_keys(config: Any) -> list[str]:
    model = extraction_model(config)
    return [key.format(model=model) for key in TOPIC_EXTRACTION_PARAM_KEYS]
