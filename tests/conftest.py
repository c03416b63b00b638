"""Shared fixtures: tiny data and tiny local models the tests build themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TEXTS = [
    "The river carries sediment from the mountains to the delta, where it settles into fertile plains.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "A prime number has exactly two divisors: one and itself. The first primes are 2, 3, 5, 7 and 11.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the chloroplast.",
    "In 1850 the railway reached the town, and within a decade its population had doubled.",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i, 'is even')",
    "The derivative of x squared is two x; integrating two x gives x squared plus a constant.",
    "Question: which gas do plants release? Answer: oxygen, because photosynthesis splits water.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer (PreTrainedTokenizerFast) trained on SAMPLE_TEXTS, with a chat template."""
    from workflow_scripts.config import TokenizerSpec
    from workflow_scripts.local_models import train_tokenizer

    return train_tokenizer(SAMPLE_TEXTS, TokenizerSpec(vocab_size=400, min_frequency=1))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A Hugging Face folder with a randomly initialised 2-layer Llama and the tiny tokenizer."""
    from workflow_scripts.config import TinyLlama
    from workflow_scripts.local_models import save_tiny_llama

    out = tmp_path_factory.mktemp("tiny_llama") / "model"
    return save_tiny_llama(TinyLlama(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=512), tiny_tokenizer, out)


# --- whole default pipeline builds, shared by the slow end-to-end tests (one of each per session) ---------


@pytest.fixture(scope="session")
def snakemake_build(tmp_path_factory) -> Path:
    """A copy of the project with the default pipeline built by `snakemake --cores 2`. Do not modify:
    tests that change it work on a copy (copy_built_project)."""
    from tests.project import copy_project, run

    project = copy_project(tmp_path_factory.mktemp("snakemake_build"))
    run(project, "snakemake", "--cores", "2")
    return project


@pytest.fixture(scope="session")
def dvc_build(tmp_path_factory) -> Path:
    """A copy of the project with the default pipeline built by `dvc repro`. Do not modify (see above)."""
    from tests.project import copy_project, run

    project = copy_project(tmp_path_factory.mktemp("dvc_build"))
    run(project, "dvc", "repro")
    return project


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct converted from the installed wheel's GGUF file (about a minute on 2 cores), in
    the cache the standalone scorer uses ($XDG_CACHE_HOME/workflow_scripts/builtin): converted once."""
    from workflow_scripts.llm import builtin

    try:
        builtin.gguf_path("smollm2-135m-instruct")
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return builtin.cached_builtin_dir("builtin:smollm2-135m-instruct")
