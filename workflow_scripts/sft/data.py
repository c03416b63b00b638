"""The SFT stage's instruction data: records -> pairs, the held-out split, tokenisation with loss masking."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from workflow_scripts.config.sft import InstructionSource, SFTConfig
from workflow_scripts.core.artifacts import InputError
from workflow_scripts.generate.reader import iter_documents

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
LABELS = ("A", "B", "C", "D")

# --- instruction data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One instruction and the response the model learns to give."""

    prompt: str
    response: str
    source: str


def _records_from_file(file: Path) -> Iterator[dict[str, Any]]:
    if file.suffix == ".parquet":
        import polars as pl

        yield from pl.read_parquet(file).iter_rows(named=True)
    elif file.suffix == ".jsonl":
        with open(file) as handle:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as error:
                        raise InputError(f"{file}:{line_no}: not valid JSON ({error.msg})") from None
    elif file.suffix == ".json":
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{file}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(data, list):
            raise InputError(f"{file}: expected a JSON list of records, got {type(data).__name__}")
        yield from data
    else:
        raise InputError(f"{file}: unsupported file type (use .json, .jsonl or .parquet)")


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.suffix in (".json", ".jsonl", ".parquet") and p.name != "manifest.json"
    )
    if not files:
        raise InputError(f"{path}: no .json, .jsonl or .parquet files")
    return files


def iter_records(source: InstructionSource) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) pairs of a local file/folder, or of a hub dataset when the path does not exist."""
    assert source.path is not None
    path = Path(source.path)
    if path.exists():
        for file in _data_files(path):
            for index, record in enumerate(_records_from_file(file)):
                yield f"{file} record {index}", record
        return
    import datasets

    log.info("loading hub dataset %s (split %s)", source.path, source.split)
    for index, record in enumerate(datasets.load_dataset(source.path, split=source.split)):
        yield f"{source.path}[{source.split}] record {index}", dict(record)


def _text(record: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(f"{where}: field {key!r} must be a non-empty string (got {value!r:.80})")
    return value


def alpaca_pair(record: dict[str, Any], where: str) -> Pair:
    instruction = _text(record, "instruction", where)
    extra = _text(record, "input", where, required=False).strip()
    prompt = f"{instruction.strip()}\n\n{extra}" if extra else instruction.strip()
    return Pair(prompt, _text(record, "output", where).strip(), "alpaca")


def flan_pair(record: dict[str, Any], where: str) -> Pair:
    return Pair(_text(record, "inputs", where).strip(), _text(record, "targets", where).strip(), "flan")


# Generated documents: the generate stage writes one flat JSON object {passages, question, options, answer,
# explanation} per row (generate/templates.py owns the schema).


def _answer_index(answer: Any, options: list[str], where: str) -> int:
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
        return answer
    if isinstance(answer, str):
        cleaned = answer.strip().strip("().:").strip().upper()
        if cleaned in LABELS[: len(options)]:
            return LABELS.index(cleaned)
        for index, option in enumerate(options):
            if answer.strip() == option.strip():
                return index
    raise InputError(f"{where}: answer {answer!r} is not a label A-D, an index or one of the options")


def mcq_from_document(document: Any, where: str) -> dict[str, Any]:
    """``{"question", "options": [4], "answer": index, "explanation"}`` from one generated JSON document."""
    if isinstance(document, str):
        try:
            document = json.loads(document, strict=False)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: raw JSON does not parse ({error.msg})") from None
    if not isinstance(document, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(document).__name__}")
    question, options = document.get("question"), document.get("options")
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"{where}: no question text (keys {sorted(document)})")
    if not isinstance(options, list) or len(options) != 4 or not all(isinstance(o, str) for o in options):
        raise InputError(f"{where}: 'options' must be a list of 4 strings (got {options!r:.120})")
    explanation = document.get("explanation")
    return {
        "question": question.strip(),
        "options": [o.strip() for o in options],
        "answer": _answer_index(document.get("answer"), options, where),
        "explanation": explanation.strip() if isinstance(explanation, str) else "",
    }


def mcq_pair(mcq: dict[str, Any], include_explanation: bool) -> Pair:
    options = "\n".join(f"{label}. {text}" for label, text in zip(LABELS, mcq["options"]))
    prompt = f"{mcq['question']}\n\n{options}"
    label = LABELS[mcq["answer"]]
    verdict = f"Answer: {label}. {mcq['options'][mcq['answer']]}"
    if include_explanation and mcq["explanation"]:
        return Pair(prompt, f"{mcq['explanation']}\n\n{verdict}", "generated_mcq")
    return Pair(prompt, verdict, "generated_mcq")


def load_pairs(config: SFTConfig, generations: Path | None) -> tuple[list[Pair], dict[str, int]]:
    """All instruction pairs of the configured sources, in source order; plus per-source counts."""
    pairs: list[Pair] = []
    counts: dict[str, int] = {}
    for source in config.sources:
        before = len(pairs)
        if source.type == "generated_mcq":
            if generations is None:
                raise InputError(
                    "sft.sources has a generated_mcq source: pass --generations (a generate artifact)"
                )
            records: Iterable[tuple[str, Any]] = iter_documents(generations)
        else:
            records = iter_records(source)
        for where, record in records:
            if source.max_examples is not None and len(pairs) - before >= source.max_examples:
                break
            if source.type == "alpaca":
                pairs.append(alpaca_pair(record, where))
            elif source.type == "flan":
                pairs.append(flan_pair(record, where))
            else:
                pairs.append(mcq_pair(mcq_from_document(record, where), config.include_explanation))
        counts[source.type] = counts.get(source.type, 0) + len(pairs) - before
        log.info(
            "source %s: %d pairs", source.type if source.path is None else source.path, len(pairs) - before
        )
    if not pairs:
        raise InputError("the SFT sources hold no instruction pairs")
    return pairs, counts


def split_heldout(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Stable split by a hash of the prompt: the same pair is held out whatever else is in the data."""
    train, heldout = [], []
    for pair in pairs:
        digest = hashlib.sha256(f"sft-heldout:{seed}:{pair.prompt}".encode()).hexdigest()
        (heldout if int(digest[:8], 16) / 0xFFFFFFFF < fraction else train).append(pair)
    if not train:
        raise InputError(f"heldout_fraction {fraction} left no training pairs out of {len(pairs)}")
    return train, heldout


# --- tokenisation with loss masking -----------------------------------------------------------------------


def conversation(pair: Pair, system_prompt: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": pair.prompt},
        {"role": "assistant", "content": pair.response},
    ]


def encode_pair(
    tokenizer: Any, pair: Pair, system_prompt: str, max_length: int
) -> dict[str, list[int]] | None:
    """``input_ids`` and ``labels`` (-100 on every prompt token) for one pair; None when the prompt alone
    leaves no room for a response token."""
    messages = conversation(pair, system_prompt)
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise InputError(
            "the chat template does not render the prompt as a prefix of the full conversation; "
            "set sft.chat_template to one that does"
        )
    # Prompt and response are tokenised apart so that the boundary is exact (no merge across it); lm-eval
    # likewise encodes context and continuation separately.
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_length or not response_ids:
        return None
    response_ids = response_ids[: max_length - len(prompt_ids)]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids}


def encode_all(
    tokenizer: Any, pairs: list[Pair], config: SFTConfig
) -> tuple[list[dict[str, list[int]]], int]:
    encoded, dropped = [], 0
    for pair in pairs:
        item = encode_pair(tokenizer, pair, config.system_prompt, config.max_length)
        if item is None:
            dropped += 1
        else:
            encoded.append(item)
    if dropped:
        log.warning("%d pairs dropped: the prompt alone reaches max_length %d", dropped, config.max_length)
    return encoded, dropped


def collate(items: list[dict[str, list[int]]], pad_id: int) -> dict[str, "torch.Tensor"]:
    import torch

    width = max(len(item["input_ids"]) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        ids[row, :n] = torch.tensor(item["input_ids"])
        labels[row, :n] = torch.tensor(item["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
