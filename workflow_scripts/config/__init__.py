"""The configuration, on the ground floor: the schema of params.yaml and configs/*.yaml, every stage's section.

It imports no stage code; stages import it. ``root`` assembles the sections (``generate``, ``diversity``,
``tokenize``, ``mixes``, ``pretrain``, ``sft``, ``evaluate``, ``report``) into :class:`PipelineConfig`.
"""

from workflow_scripts.config.root import (
    KINDS,
    TEMPLATES,
    ConfigError,
    CorpusSource,
    ExperimentSpec,
    LocalModelsConfig,
    ModelSpec,
    PipelineConfig,
    RealCorpusConfig,
    ResourcesConfig,
    StageResources,
    SyntheticSpec,
    TinyLlama,
    TokenizerSpec,
    TopicsConfig,
    load_config,
    lookup,
    parse_config,
)

__all__ = [
    "KINDS", "TEMPLATES", "ConfigError", "CorpusSource", "ExperimentSpec", "LocalModelsConfig", "ModelSpec",
    "PipelineConfig", "RealCorpusConfig", "ResourcesConfig", "StageResources", "SyntheticSpec", "TinyLlama",
    "TokenizerSpec", "TopicsConfig", "load_config", "lookup", "parse_config",
]
