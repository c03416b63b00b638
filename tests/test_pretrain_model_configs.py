"""Named model configs: the paper's sizes, parameter counts, FLOPs formula, and the pretrain config section."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workflow_scripts.config.model_configs import (
    MODELS,
    PAPER_VOCAB,
    flops_per_token,
    get_arch,
    main,
    padded_vocab_size,
    param_count,
)
from workflow_scripts.config.pretrain import PARAM_KEYS, PARAM_KEYS_CONVERT, UNTRACKED_KEYS, PretrainConfig


def llama_params(vocab: int, hidden: int, ffn: int, layers: int) -> int:
    """Llama, untied embeddings, MHA, no biases: 2 V h + L (4 h^2 + 3 h f + 2 h) + h."""
    return 2 * vocab * hidden + layers * (4 * hidden**2 + 3 * hidden * ffn + 2 * hidden) + hidden


def test_paper_architectures_are_as_published():
    small, large = get_arch("350m"), get_arch("1.4b")
    assert (small.hidden_size, small.ffn_hidden_size, small.num_layers, small.num_attention_heads) == (960, 2560, 28, 15)
    assert (large.hidden_size, large.ffn_hidden_size, large.num_layers, large.num_attention_heads) == (2048, 8192, 16, 32)
    for arch in (small, large):
        assert arch.seq_length == 2048 and arch.attention_dropout == 0.1 and arch.vocab_size == PAPER_VOCAB
        assert arch.head_dim == 64 and not arch.tie_embeddings


@pytest.mark.parametrize("name, expected", [("350m", 406_296_000), ("1.4b", 1_279_854_592)])
def test_parameter_counts_at_paper_vocab(name, expected):
    arch = get_arch(name)
    assert param_count(arch, 50_304) == expected
    assert expected == llama_params(50_304, arch.hidden_size, arch.ffn_hidden_size, arch.num_layers)


@pytest.mark.parametrize("name", ["350m", "1.4b", "tiny"])
def test_parameter_count_matches_hugging_face_llama(name):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = get_arch(name)
    config = LlamaConfig(vocab_size=50_304, hidden_size=arch.hidden_size, intermediate_size=arch.ffn_hidden_size,
                         num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_attention_heads,
                         num_key_value_heads=arch.groups, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == param_count(arch, 50_304)


def test_vocab_padding_matches_megatron():
    assert padded_vocab_size(50_295) == 50_304
    assert padded_vocab_size(400) == 512
    assert padded_vocab_size(512) == 512


def test_flops_per_token_is_six_n_plus_attention():
    arch = get_arch("350m")
    embedding = arch.vocab_size * arch.hidden_size
    n_matmul = param_count(arch) - embedding - arch.num_layers * 2 * arch.hidden_size - arch.hidden_size
    attention = 12 * arch.num_layers * 2048 * arch.hidden_size
    assert flops_per_token(arch, 2048) == 6 * n_matmul + attention


def test_cli_prints_every_config(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert f"{name}:" in out
    assert "406.3M parameters" in out and "1279.9M parameters" in out


def test_pretrain_config_defaults_follow_the_paper():
    config = PretrainConfig()
    assert (config.adam_beta1, config.adam_beta2, config.weight_decay, config.lr) == (0.9, 0.95, 0.1, 3e-4)
    assert config.lr_decay_style == "linear"


@pytest.mark.parametrize("bad, message", [
    ({"model": "7b"}, "unknown model config"),
    ({"global_batch_size": 6, "micro_batch_size": 4}, "multiple of"),
    ({"min_lr": 1e-3}, "must not exceed"),
    ({"train_steps": 5, "train_tokens": 100}, "not both"),
    ({"model": "350m", "tensor_parallel_size": 2}, "must divide the 15 attention heads"),
    ({"surprise": 1}, "Extra inputs"),
])
def test_pretrain_config_refuses_impossible_values(bad, message):
    with pytest.raises(ValidationError, match=message):
        PretrainConfig(**bad)


def test_param_keys_cover_every_field_once():
    fields = set(PretrainConfig.model_fields)
    keys = [k.removeprefix("pretrain.") for k in PARAM_KEYS + PARAM_KEYS_CONVERT + UNTRACKED_KEYS]
    assert sorted(keys) == sorted(fields)
