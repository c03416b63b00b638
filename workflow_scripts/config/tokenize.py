"""Configuration of the tokenization stage (light: pydantic only)."""

from __future__ import annotations

from pydantic import Field

from workflow_scripts.config.base import Section

LOCAL_TOKENIZER = "local"


class TokenizeConfig(Section):
    """Which tokenizer turns every corpus into Megatron token files.

    Only values that change the tokens belong here; worker counts and batch sizes are command-line options so
    that they never change an artifact's identity.
    """

    tokenizer: str = Field(
        LOCAL_TOKENIZER,
        min_length=1,
        description="'local' = the tokenizer/ folder of the local_models artifact (the CPU default); "
        "otherwise a "
        "local directory or a Hugging Face hub id (paper: Salesforce/codegen-350M-mono)",
    )
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) for a hub id")
    eod_token: str | None = Field(
        None, description="token appended after every document; default: the tokenizer's eos token"
    )
