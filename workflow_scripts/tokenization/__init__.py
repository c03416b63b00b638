"""Tokenization: corpora -> Megatron-core indexed datasets (.bin/.idx) with the tokenizer's identity.

- ``stage``: the tokenize stages (``python -m workflow_scripts.tokenization``).
- ``encode`` / ``indexed``: worker-side encoding and the streaming .bin/.idx writer.
- ``reader``: what other stages import: tokenizer identity checks and :func:`reader.read_tokenized`.
The configuration section lives in :mod:`workflow_scripts.config.tokenize`.
"""
