"""Stage convert: a pretrain artifact's final checkpoint -> a Hugging Face ``LlamaForCausalLM`` folder.

Megatron-LM ships no Llama -> Hugging Face converter, so this is our own. The checkpoint's tensors are
read at their global shapes (``dist_checkpointing`` reassembles any tensor/pipeline-parallel layout) and
renamed; two of them are re-laid out:

- ``linear_qkv.weight``: Megatron fuses Q, K and V and interleaves them per query group: for each group,
  its ``heads / groups`` query heads, then its key head, then its value head (``head_dim`` rows each).
- ``linear_fc1.weight``: the SwiGLU gate and up projections stacked, gate first.

Megatron's rotary embedding (non-interleaved, ``rotate_half``) and RMSNorm match Hugging Face Llama's,
so no other permutation is needed. The embedding keeps Megatron's padded vocabulary (logits are
identical); the padding ids, which no text can produce, are listed in ``generation_config.json``'s
``suppress_tokens`` so generation never emits them.

Input ``--checkpoint DIR`` (pretrain artifact); output: ``config.json``, ``model.safetensors``,
``generation_config.json``, the tokenizer (from the artifact, recorded by the mix, or ``--tokenizer``),
``convert_info.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from workflow_scripts.config.model_configs import ModelArch
from workflow_scripts.core.artifacts import InputError, build_artifact, read_manifest
from workflow_scripts.core.cli import load_checked_config, run_main, stage_parser
from workflow_scripts.core.identity import job_identity
from workflow_scripts.pretrain.train import quiet_megatron
from workflow_scripts.tokenization.reader import check_tokenizer, tokenizer_info

log = logging.getLogger(__name__)

STAGE = "convert"
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def read_pretrain_info(artifact: Path) -> dict[str, Any]:
    read_manifest(artifact, stage="pretrain")
    info = json.loads((artifact / "pretrain.json").read_text())
    info["arch"] = ModelArch(**info["model"])
    return info


def load_checkpoint_tensors(checkpoint_dir: Path) -> dict[str, Any]:
    """The model's tensors at their global (unsharded) shapes; optimizer state is not read."""
    from megatron.core import dist_checkpointing

    from workflow_scripts.pretrain.model import process_groups

    with process_groups(1, 1):
        metadata = dist_checkpointing.load_tensors_metadata(str(checkpoint_dir))
        wanted = {key: value for key, value in metadata.items() if not key.startswith("optimizer.")}
        state = dist_checkpointing.load(wanted, str(checkpoint_dir), validate_access_integrity=False)
    return {key: value for key, value in state.items() if key in wanted}


def megatron_to_hf(tensors: dict[str, Any], arch: ModelArch) -> dict[str, Any]:
    """Rename and re-lay out Megatron GPT tensors into Hugging Face Llama's state dict."""
    h, d, heads, groups = arch.hidden_size, arch.head_dim, arch.num_attention_heads, arch.groups
    per_group = heads // groups
    out: dict[str, Any] = {
        "model.embed_tokens.weight": tensors["embedding.word_embeddings.weight"],
        "model.norm.weight": tensors["decoder.final_layernorm.weight"],
    }
    if not arch.tie_embeddings:
        out["lm_head.weight"] = tensors["output_layer.weight"]
    qkv_all = tensors["decoder.layers.self_attention.linear_qkv.weight"]
    fc1_all = tensors["decoder.layers.mlp.linear_fc1.weight"]
    for layer in range(arch.num_layers):
        prefix = f"model.layers.{layer}"
        qkv = qkv_all[layer].reshape(groups, (per_group + 2) * d, h)
        q, k, v = qkv.split([per_group * d, d, d], dim=1)
        gate, up = fc1_all[layer].chunk(2, dim=0)
        out.update({
            f"{prefix}.input_layernorm.weight":
                tensors["decoder.layers.self_attention.linear_qkv.layer_norm_weight"][layer],
            f"{prefix}.self_attn.q_proj.weight": q.reshape(heads * d, h),
            f"{prefix}.self_attn.k_proj.weight": k.reshape(groups * d, h),
            f"{prefix}.self_attn.v_proj.weight": v.reshape(groups * d, h),
            f"{prefix}.self_attn.o_proj.weight": tensors["decoder.layers.self_attention.linear_proj.weight"][layer],
            f"{prefix}.post_attention_layernorm.weight":
                tensors["decoder.layers.mlp.linear_fc1.layer_norm_weight"][layer],
            f"{prefix}.mlp.gate_proj.weight": gate,
            f"{prefix}.mlp.up_proj.weight": up,
            f"{prefix}.mlp.down_proj.weight": tensors["decoder.layers.mlp.linear_fc2.weight"][layer],
        })
    return {key: value.contiguous() for key, value in out.items()}


def llama_config(arch: ModelArch, vocab_size: int, eod: int, dtype: str):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.groups,
        head_dim=arch.head_dim,
        max_position_embeddings=arch.seq_length,
        rms_norm_eps=arch.norm_epsilon,
        rope_parameters={"rope_type": "default", "rope_theta": float(arch.rotary_base)},
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=arch.attention_dropout,
        hidden_act="silu",
        tie_word_embeddings=arch.tie_embeddings,
        bos_token_id=eod,
        eos_token_id=eod,
        pad_token_id=eod,
        initializer_range=arch.init_method_std,
        dtype=dtype,
    )


def convert(artifact: Path, out_dir: Path, *, dtype: str = "float32", tokenizer_dir: Path | None = None) -> Path:
    """Write the Hugging Face folder into ``out_dir`` (an existing, empty directory)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    quiet_megatron()
    info = read_pretrain_info(artifact)
    arch: ModelArch = info["arch"]
    vocab, tokenizer_vocab, eod = info["vocab_size"], info["tokenizer"]["vocab_size"], info["tokenizer"]["eod_id"]
    tokenizer_dir = tokenizer_dir or (artifact / "tokenizer" if (artifact / "tokenizer").is_dir() else None)
    if tokenizer_dir is None:
        raise InputError(f"{artifact}: has no tokenizer/ (the mix recorded none); pass --tokenizer DIR")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    # the tokenizer must be the one the training data was made with (content hash, size, end-of-document id)
    try:
        found = tokenizer_info(tokenizer, str(tokenizer_dir), eod_token=info["tokenizer"]["eod_token"])
    except ValueError as error:
        raise InputError(f"{tokenizer_dir}: not the tokenizer the model was trained with: {error}") from None
    check_tokenizer(found, info["tokenizer"], where=str(tokenizer_dir), keys=("hash", "vocab_size", "eod_id"))

    state = megatron_to_hf(load_checkpoint_tensors(artifact / "checkpoint"), arch)
    config = llama_config(arch, vocab, eod, dtype)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict({k: v.to(getattr(torch, dtype)) for k, v in state.items()}, strict=True, assign=True)
    if arch.tie_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=eod, eos_token_id=eod, pad_token_id=eod,
        suppress_tokens=list(range(tokenizer_vocab, vocab)) or None,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    facts = {"source_step": info["train_steps"], "vocab_size": vocab, "tokenizer_vocab_size": tokenizer_vocab,
             "dtype": dtype, "parameters": sum(p.numel() for p in model.parameters())}
    (out_dir / "convert_info.json").write_text(json.dumps(facts, indent=2) + "\n")
    log.info("converted %s -> %s (%d parameters)", artifact, out_dir, facts["parameters"])
    return out_dir


def load_megatron_model(artifact: Path):
    """The trained GPTModel (TP = PP = 1, fp32, eval mode) on CPU, for parity checks and debugging."""
    from workflow_scripts.config.pretrain import PretrainConfig
    from workflow_scripts.pretrain import checkpoint
    from workflow_scripts.pretrain import model as mm

    quiet_megatron()
    info = read_pretrain_info(artifact)
    runtime = mm.init_distributed(1, 1)
    config = PretrainConfig(precision="fp32", transformer_engine=False)  # TP = PP = 1, local layers
    mm.seed_everything(0, runtime)
    tf_config = mm.transformer_config(info["arch"], config, runtime, "fp32")
    gpt = mm.build_gpt(info["arch"], tf_config, mm.layer_spec(config, runtime), info["vocab_size"],
                       info["seq_length"], runtime)
    checkpoint.load_model_only(artifact / "checkpoint", gpt)
    return gpt.eval()


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    read_manifest(args.checkpoint, stage="pretrain", experiment=args.experiment)
    inputs: dict[str, Path] = {"checkpoint": args.checkpoint}
    if args.tokenizer is not None:
        inputs["tokenizer"] = args.tokenizer
    identity = job_identity(config, STAGE, args.experiment, inputs)
    with build_artifact(args.out, identity=identity, inputs=inputs) as artifact:
        convert(args.checkpoint, artifact.path, dtype=DTYPES[config.pretrain.export_dtype],
                tokenizer_dir=args.tokenizer)
        facts = json.loads((artifact.path / "convert_info.json").read_text())
        artifact.counts.update(parameters=facts["parameters"])
        artifact.info.update(facts)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, experiment=True)
    parser.prog = "python -m workflow_scripts.pretrain.convert"
    parser.add_argument("--checkpoint", type=Path, required=True, help="pretrain artifact directory")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="Hugging Face tokenizer folder, when the pretrain artifact has none")
    return run_main(run, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
