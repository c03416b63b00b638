"""Bad configurations and bad input files, each with the text its refusal must name (a key path or a file).

Shared by tests/test_validation.py (the planner, `snakemake -n`, `dvc repro`) and benchmarks/bench_validation.py
(every case through both front-ends, with the counts). The names are those of configs/tiny.yaml, the copies'
params.yaml: experiment topic_t8_g2 has T x G = 8 x 2 texts, the mixes' budget is 40 x 8 x 128 = 40960 tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

Edit = Callable[[dict], None]


@dataclass(frozen=True)
class BadInput:
    name: str
    expected: str                                # the refusal must contain this (key path and/or file)
    edit: Edit | None = None                     # a change to the parsed config
    text: tuple[str, str] | None = None          # or one to the file's text (faults YAML parsing would hide)
    files: dict[str, bytes] = field(default_factory=dict)  # input files to create, relative to the project
    dvc_expected: str | None = None              # DVC's own refusal, where DVC reads the fault first

    def write(self, base_text: str, root: Path, name: str = "bad.yaml") -> Path:
        """Create the case's input files under ``root`` and its config as ``root/name``."""
        for relative, content in self.files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(content)
        text = base_text
        if self.text is not None:
            old, new = self.text
            assert text.count(old) == 1, f"{self.name}: {old!r} must occur once"
            text = text.replace(old, new)
        if self.edit is not None:
            raw = copy.deepcopy(yaml.safe_load(text))
            self.edit(raw)
            text = yaml.safe_dump(raw, sort_keys=False)
        path = root / name
        path.write_text(text)
        return path


def _set(dotted: str, value: Any) -> Edit:
    def edit(raw: dict) -> None:
        *parents, last = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return edit


def _append(dotted: str, value: Any) -> Edit:
    def edit(raw: dict) -> None:
        node = raw
        for part in dotted.split("."):
            node = node[part]
        node.append(value)
    return edit


def _corpus(name: str, type_: str, pattern: str) -> Edit:
    return _append("real_corpus.sources", {"name": name, "kind": "web", "type": type_, "paths": [pattern]})


SYNTHETIC_TOKENS = "experiments.topic_t8_g2.mix.synthetic_effective_tokens"

BAD_INPUTS: list[BadInput] = [
    # the schema and strict types
    BadInput("typo in a key", "topics.near_duplicate_treshold: unknown key",
             text=("near_duplicate_threshold: 0.85", "near_duplicate_treshold: 0.85")),
    BadInput("duplicate key", "duplicate key 'seed'", text=("\nseed: 1234\n", "\nseed: 1234\nseed: 7\n"),
             dvc_expected='found duplicate key "seed"'),  # DVC parses params.yaml for its params itself
    BadInput("bool as an int", "experiments.topic_t8_g2.synthetic.topics: Input should be a valid integer",
             edit=_set("experiments.topic_t8_g2.synthetic.topics", True)),
    BadInput("bool as a float", "topics.near_duplicate_threshold: Input should be a valid number",
             edit=_set("topics.near_duplicate_threshold", True)),
    BadInput("string as an int", "pretrain.train_steps: Input should be a valid integer",
             edit=_set("pretrain.train_steps", "10")),
    BadInput("unknown generator", "experiments.topic_t8_g2.synthetic.generator: 'gpt-9' is not in 'models'",
             edit=_set("experiments.topic_t8_g2.synthetic.generator", "gpt-9")),
    BadInput("unknown resources stage", "resources.stages: unknown stages ['pretrian']",
             edit=_set("resources.stages", {"pretrian": {"cpus": 1}})),
    # settings impossible together
    BadInput("synthetic tokens above the budget", f"{SYNTHETIC_TOKENS} (50000) is not below the budget of 40960",
             edit=_set(SYNTHETIC_TOKENS, 50000)),
    BadInput("synthetic tokens leave a real kind short", f"{SYNTHETIC_TOKENS} (40500) leaves 460",
             edit=_set(SYNTHETIC_TOKENS, 40500)),
    BadInput("warmup not below the steps", "pretrain.lr_warmup_steps (40) must be fewer than the 40 training steps",
             edit=_set("pretrain.lr_warmup_steps", 40)),
    BadInput("batch sizes differ", "pretrain.global_batch_size (16) must equal mixes.global_batch_size (8)",
             edit=_set("pretrain.global_batch_size", 16)),
    BadInput("sequence longer than the context", "mixes.seq_length (100000) is longer than the",
             edit=_set("mixes.seq_length", 100_000)),
    BadInput("more k-means clusters than texts",
             "diversity.embedding.kmeans_k (20) is more than the 16 texts experiment 'topic_t8_g2' scores",
             edit=_set("diversity.embedding.kmeans_k", 20)),
    # external input files: exist, not empty, parse
    BadInput("missing topics source", "topics.sources.1: topic file inputs/missing.json does not exist",
             edit=_append("topics.sources", "inputs/missing.json")),
    BadInput("topics file holding {}", "topics.sources.1: inputs/empty_object.json: holds no topics",
             edit=_append("topics.sources", "inputs/empty_object.json"), files={"inputs/empty_object.json": b"{}\n"}),
    BadInput("empty topics file", "topics.sources.1: inputs/empty.json: holds no topics",
             edit=_append("topics.sources", "inputs/empty.json"), files={"inputs/empty.json": b""}),
    BadInput("topics file not JSON", "topics.sources.1: inputs/broken.jsonl:2: not valid JSON",
             edit=_append("topics.sources", "inputs/broken.jsonl"),
             files={"inputs/broken.jsonl": b'{"A/b": ["x", "y", "z"]}\n{"A/c": [\n'}),
    BadInput("missing personas file", "generate.prompts.personas_path: persona file inputs/personas.jsonl does not exist",
             edit=_set("generate.prompts.personas_path", "inputs/personas.jsonl")),
    BadInput("empty personas file", "generate.prompts.personas_path: inputs/none.jsonl: no personas found",
             edit=_set("generate.prompts.personas_path", "inputs/none.jsonl"), files={"inputs/none.jsonl": b"\n"}),
    BadInput("corpus glob matching nothing", "real_corpus.sources.3 (mine).paths: no file matches ['inputs/web/*.jsonl']",
             edit=_corpus("mine", "jsonl", "inputs/web/*.jsonl")),
    BadInput("empty corpus file", "real_corpus.sources.3 (mine): inputs/web/a.jsonl: empty file",
             edit=_corpus("mine", "jsonl", "inputs/web/*.jsonl"), files={"inputs/web/a.jsonl": b""}),
    BadInput("corpus file without its text field", "inputs/web/b.jsonl: line 1 has no field 'text'",
             edit=_corpus("mine", "jsonl", "inputs/web/*.jsonl"), files={"inputs/web/b.jsonl": b'{"body": "x"}\n'}),
    BadInput("corpus file not Parquet", "inputs/web/c.parquet: not a readable Parquet file",
             edit=_corpus("mine", "parquet", "inputs/web/*.parquet"), files={"inputs/web/c.parquet": b"not parquet"}),
    BadInput("missing instruction file", "sft.sources.1.path: inputs/alpaca.json does not exist",
             edit=_append("sft.sources", {"type": "alpaca", "path": "inputs/alpaca.json"})),
    BadInput("missing task folder", "evaluation.include_paths.0: inputs/tasks does not exist",
             edit=_set("evaluation.include_paths", ["inputs/tasks"])),
]


def case(name: str) -> BadInput:
    return next(c for c in BAD_INPUTS if c.name == name)
