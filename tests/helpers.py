"""Small builders shared by tests."""

from __future__ import annotations

from pathlib import Path

import yaml


def minimal_config(**overrides) -> dict:
    """A valid configuration dict with tiny settings; keyword arguments replace top-level sections."""
    raw = {
        "data_root": "data",
        "seed": 1234,
        "models": {"gen": {"local": "generator"}},
        "local_models": {"tokenizer": {"vocab_size": 300, "min_frequency": 1},
                         "models": {"generator": {"hidden_size": 32, "intermediate_size": 64,
                                                  "num_hidden_layers": 1, "num_attention_heads": 2}}},
        "real_corpus": {"sources": [{"name": "docs", "kind": "web", "type": "python_stdlib_docs"}],
                        "weights": {"web": 1}, "max_chars": 200_000},
        "experiments": {"real_only": {}},
    }
    raw.update(overrides)
    return raw


def write_config(directory: Path, name: str = "config.yaml", **overrides) -> Path:
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(minimal_config(**overrides), sort_keys=False))
    return path
