"""Stage: build the tokenizer and tiny, randomly initialised Llama models the CPU default runs on, and
convert the real builtin models the registry names (``path: builtin:NAME``, see llm/builtin.py) into
Hugging Face folders under ``builtin/NAME`` (the GGUF file's hash is recorded in the manifest).

No weights can be downloaded in the default, so this stage trains a byte-level BPE tokenizer on the
real corpus and saves Hugging Face ``LlamaForCausalLM`` folders (safetensors + config + tokenizer),
one per entry of ``local_models.models``. Every later stage then loads them exactly as it would load
real weights: ``from_pretrained(local_dir_or_hub_id)``. Their outputs show the machinery works; they
say nothing about the paper's science.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl

from workflow_scripts.config import TinyLlama, TokenizerSpec
from workflow_scripts.config.root import PLAIN_CHAT_TEMPLATE
from workflow_scripts.core.artifacts import build_artifact, read_manifest
from workflow_scripts.core.cli import load_checked_config, run_main, stage_parser
from workflow_scripts.core.hashing import hash_file_cached
from workflow_scripts.core.identity import job_identity
from workflow_scripts.llm.builtin import BUILTIN_DIR, convert_gguf, gguf_path

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
SPECIAL_TOKENS = [EOS, "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
def train_tokenizer(texts: Iterable[str], spec: TokenizerSpec = TokenizerSpec()):
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_bounded(texts, spec.max_training_chars), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=None,
        model_max_length=2048,
    )
    fast.chat_template = PLAIN_CHAT_TEMPLATE
    return fast


def _bounded(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    used = 0
    for text in texts:
        if used >= max_chars:
            return
        yield text[: max_chars - used]
        used += len(text)


def save_tiny_llama(spec: TinyLlama, tokenizer, out_dir: Path) -> Path:
    """Save a randomly initialised ``LlamaForCausalLM`` (with the tokenizer) as a Hugging Face folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=0.0,
    )
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config)
    spec = config.local_models
    read_manifest(args.corpus, stage="real_corpus")
    texts = pl.read_parquet(args.corpus / "train.parquet", columns=["text"])["text"]
    inputs = {"corpus": args.corpus}
    with build_artifact(args.out, identity=job_identity(config, "local_models", inputs=inputs),
                        inputs=inputs) as artifact:
        log.info("training a byte-level BPE tokenizer (vocab %d) on %d documents", spec.tokenizer.vocab_size,
                 len(texts))
        tokenizer = train_tokenizer(texts, spec.tokenizer)
        tokenizer.save_pretrained(artifact.path / "tokenizer")
        artifact.info["vocab_size"] = len(tokenizer)
        artifact.info["eos_token_id"] = tokenizer.eos_token_id
        for name, model_spec in spec.models.items():
            log.info("building tiny random Llama %r (%s)", name, model_spec.model_dump())
            save_tiny_llama(model_spec, tokenizer, artifact.path / name)
        for name in config.builtin_models():
            convert_gguf(name, artifact.path / BUILTIN_DIR / name)
            artifact.info.setdefault("builtin", {})[name] = {
                "gguf": gguf_path(name).name, "gguf_sha256": hash_file_cached(gguf_path(name))}
        artifact.counts.update(models=len(spec.models), vocab_size=len(tokenizer),
                               builtin_models=len(config.builtin_models()))


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--corpus", type=Path, required=True, help="real_corpus artifact directory")
    return run_main(run, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
