"""Named model architectures for pre-training, in one readable place (no torch import).

The paper (PAPER.md section 5) trains two Llama-style models: RMSNorm, SwiGLU MLP, rotary position
embeddings, no biases, untied input/output embeddings, context 2048, attention dropout 0.1. The ``tiny``
entry is the CPU default: same architecture family, sizes that train in seconds on two cores.

``vocab_size`` is the number of embedding rows. The paper's tokenizer (CodeGen-Mono) pads to 50,304; a
config with ``vocab_size=None`` takes the mix's tokenizer size padded to a multiple of
:data:`VOCAB_PAD_MULTIPLE`. A mix whose padded tokenizer size differs from a fixed ``vocab_size`` is
refused by the training stage.

Counted with untied input/output embeddings (as in Llama) at vocabulary 50,304, "350M" has 406.3M
parameters and "1.4B" 1,279.9M (358.0M and 1,176.8M with tied embeddings): the paper's names are
approximate and it does not say which it used; ``tie_embeddings`` is a field here.

``python -m workflow_scripts.config.model_configs`` prints every config with its parameter count.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass

VOCAB_PAD_MULTIPLE = 128  # Megatron's make-vocab-size-divisible-by default; 50,295 -> 50,304
PAPER_VOCAB = 50_304


@dataclass(frozen=True)
class ModelArch:
    """A Llama-style decoder: RMSNorm, SwiGLU, RoPE, no biases."""

    name: str
    hidden_size: int
    ffn_hidden_size: int
    num_layers: int
    num_attention_heads: int
    seq_length: int                       # context length the model is trained at (RoPE works up to it)
    vocab_size: int | None = None         # embedding rows; None = the mix tokenizer's, padded
    num_query_groups: int | None = None   # grouped-query attention; None = one group per head (MHA)
    attention_dropout: float = 0.1
    hidden_dropout: float = 0.0
    rotary_base: int = 10_000
    norm_epsilon: float = 1e-5
    tie_embeddings: bool = False
    init_method_std: float = 0.02
    description: str = ""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{self.name}: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.groups:
            raise ValueError(f"{self.name}: num_attention_heads must be divisible by num_query_groups")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)


MODELS: dict[str, ModelArch] = {
    arch.name: arch
    for arch in [
        ModelArch(
            name="tiny", hidden_size=64, ffn_hidden_size=128, num_layers=2, num_attention_heads=4,
            seq_length=128, description="CPU default: shows the machinery works, says nothing about the science",
        ),
        ModelArch(
            name="350m", hidden_size=960, ffn_hidden_size=2560, num_layers=28, num_attention_heads=15,
            seq_length=2048, vocab_size=PAPER_VOCAB,
            description="paper: 350M (50B tokens, global batch 256 sequences)",
        ),
        ModelArch(
            name="1.4b", hidden_size=2048, ffn_hidden_size=8192, num_layers=16, num_attention_heads=32,
            seq_length=2048, vocab_size=PAPER_VOCAB,
            description="paper: 1.4B (150B tokens, global batch 128 sequences)",
        ),
    ]
}


class UnknownModel(KeyError):
    pass


def get_arch(name: str) -> ModelArch:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(f"unknown model config {name!r} (known: {sorted(MODELS)})") from None


def padded_vocab_size(tokenizer_vocab: int, multiple: int = VOCAB_PAD_MULTIPLE) -> int:
    return int(math.ceil(tokenizer_vocab / multiple) * multiple)


def param_count(arch: ModelArch, vocab_size: int | None = None) -> int:
    """Number of trainable parameters (analytic; equals the Megatron model's at TP = PP = 1)."""
    vocab = vocab_size if vocab_size is not None else arch.vocab_size
    if vocab is None:
        raise ValueError(f"{arch.name}: give vocab_size (the config takes it from the tokenizer)")
    h, f = arch.hidden_size, arch.ffn_hidden_size
    kv = arch.groups * arch.head_dim
    per_layer = (
        h                       # input RMSNorm
        + h * (h + 2 * kv)      # fused QKV
        + h * h                 # attention output projection
        + h                     # pre-MLP RMSNorm
        + h * 2 * f             # fused gate + up (SwiGLU)
        + f * h                 # down projection
    )
    embeddings = vocab * h * (1 if arch.tie_embeddings else 2)
    return embeddings + arch.num_layers * per_layer + h  # + final RMSNorm


def flops_per_token(arch: ModelArch, seq_length: int, vocab_size: int | None = None) -> float:
    """Model FLOPs of one training token (forward + backward = 3 x forward), for MFU.

    Forward, per token: 2 FLOPs per weight of every matrix multiply (QKV, output projection, the three
    SwiGLU matrices, the LM head; the embedding lookup is free) plus attention itself, 2 * s * h for
    Q.K^T and 2 * s * h for the weighted sum of V, per layer, counted over the full (not causal-halved)
    s x s square as in the Megatron-LM and PaLM formulas. Activation recomputation is not counted
    (model FLOPs, not hardware FLOPs). Total = 6 * N_matmul + 12 * L * s * h.
    """
    vocab = vocab_size if vocab_size is not None else arch.vocab_size
    if vocab is None:
        raise ValueError(f"{arch.name}: give vocab_size")
    h, f = arch.hidden_size, arch.ffn_hidden_size
    kv = arch.groups * arch.head_dim
    matmul_weights = arch.num_layers * (h * (h + 2 * kv) + h * h + 3 * h * f) + vocab * h
    return 6.0 * matmul_weights + 12.0 * arch.num_layers * seq_length * h


def describe(arch: ModelArch, vocab_size: int | None = None) -> str:
    vocab = vocab_size if vocab_size is not None else (arch.vocab_size or PAPER_VOCAB)
    params = param_count(arch, vocab)
    non_embedding = params - vocab * arch.hidden_size * (1 if arch.tie_embeddings else 2)
    return (
        f"{arch.name:>5}: {params / 1e6:8.1f}M parameters ({non_embedding / 1e6:.1f}M non-embedding) at vocab "
        f"{vocab}; hidden {arch.hidden_size}, FFN {arch.ffn_hidden_size}, {arch.num_layers} layers, "
        f"{arch.num_attention_heads} heads, context {arch.seq_length}; {arch.description}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the named model configs and their parameter counts.")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help=f"vocabulary for the count (default: the config's, else {PAPER_VOCAB})")
    parser.add_argument("names", nargs="*", help="configs to print (default: all)")
    args = parser.parse_args(argv)
    try:
        archs = [get_arch(n) for n in args.names] if args.names else list(MODELS.values())
    except UnknownModel as error:
        parser.error(str(error))
    for arch in archs:
        sys.stdout.write(describe(arch, args.vocab_size) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
