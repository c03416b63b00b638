"""Tokenization: corpora -> Megatron-core indexed datasets (.bin/.idx) with the tokenizer's identity.

Public API (light imports only; the stage itself lives in :mod:`workflow_scripts.tokenization.stage`):

- :class:`TokenizeConfig` - the ``tokenize`` config section.
- :class:`TokenizerInfo`, :func:`describe_tokenizer`, :func:`check_tokenizer`, :func:`token_dtype` - identity.
- :func:`read_tokenized` - open a tokenize artifact, refusing another tokenizer / vocab size / dtype.
- :class:`IndexedDatasetWriter` - streaming .bin/.idx writer.
"""

from importlib import import_module
from typing import Any

# Names resolve on first use, so that worker processes importing ``tokenization.encode`` load neither pydantic
# nor the configuration schema.
_EXPORTS = {
    "TokenizeConfig": "config",
    "TokenizerInfo": "identity",
    "check_tokenizer": "identity",
    "describe_tokenizer": "identity",
    "token_dtype": "identity",
    "tokenizer_hash": "identity",
    "IndexedDatasetWriter": "indexed",
    "TokenizedArtifact": "reader",
    "TokenizedDataset": "reader",
    "read_tokenized": "reader",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
