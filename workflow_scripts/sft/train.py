"""The SFT stage's data loading, loss masking and training loop (see the package docstring)."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from workflow_scripts.config.sft import InstructionSource, SFTConfig
from workflow_scripts.core.artifacts import InputError, build_artifact, read_manifest
from workflow_scripts.core.cli import add_common_arguments, load_checked_config, run_main
from workflow_scripts.core.identity import job_identity
from workflow_scripts.generate.reader import generation_shards, iter_documents
from workflow_scripts.sft.reader import SFT_INFO

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
HELDOUT_FILE = "heldout.jsonl"
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


# --- training ---------------------------------------------------------------------------------------------


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak LR at optimiser step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def response_loss(
    model: Any, items: list[dict[str, list[int]]], batch_size: int, pad_id: int, device: str
) -> float:
    """Mean loss per response token over ``items`` (NaN for none)."""
    import torch

    if not items:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            batch = {k: v.to(device) for k, v in collate(items[start : start + batch_size], pad_id).items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.float()
            targets = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += float(losses)
            count += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(count, 1)


def train(
    model: Any,
    items: list[dict[str, list[int]]],
    config: SFTConfig,
    pad_id: int,
    device: str,
    metrics_path: Path,
) -> dict[str, float]:
    """AdamW over ``items`` for ``config.epochs``; one metrics.csv row per optimiser step."""
    import torch
    from tqdm import tqdm

    rng = random.Random(config.seed)
    micro_per_epoch = math.ceil(len(items) / config.batch_size)
    total_micro = max(1, round(micro_per_epoch * config.epochs))
    total_steps = math.ceil(total_micro / config.gradient_accumulation)
    warmup = int(config.warmup_ratio * total_steps)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        betas=config.adam_betas,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, config.schedule)
    )
    model.train()
    started = time.perf_counter()
    step, tokens, window, last_loss = 0, 0, [], float("nan")
    order: list[int] = []
    with (
        open(metrics_path, "w", newline="") as handle,
        tqdm(total=total_steps, desc="sft", unit="step") as bar,
    ):
        writer = csv.writer(handle)
        writer.writerow(["step", "epoch", "loss", "lr", "grad_norm", "tokens", "elapsed_s"])
        for micro in range(total_micro):
            if not order:
                order = list(range(len(items)))
                rng.shuffle(order)
            batch_idx, order = order[: config.batch_size], order[config.batch_size :]
            batch = {k: v.to(device) for k, v in collate([items[i] for i in batch_idx], pad_id).items()}
            loss = model(**batch).loss
            (loss / config.gradient_accumulation).backward()
            window.append(float(loss.detach()))
            tokens += int((batch["labels"] != IGNORE_INDEX).sum())
            if (micro + 1) % config.gradient_accumulation and micro + 1 != total_micro:
                continue
            grad_norm = (
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                if config.max_grad_norm
                else _grad_norm(model)
            )
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = sum(window) / len(window)
            window = []
            writer.writerow(
                [
                    step,
                    round((micro + 1) / micro_per_epoch, 4),
                    f"{last_loss:.6f}",
                    f"{lr:.6g}",
                    f"{float(grad_norm):.6f}",
                    tokens,
                    round(time.perf_counter() - started, 3),
                ]
            )
            bar.update(1)
            if step % config.log_every == 0 or step == total_steps:
                log.info("step %d/%d loss %.4f lr %.3g", step, total_steps, last_loss, lr)
    return {"steps": step, "train_tokens": tokens, "final_train_loss": last_loss}


def _grad_norm(model: Any) -> float:
    import torch

    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def load_model_and_tokenizer(model_path: str, tokenizer_path: str | None, config: SFTConfig, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workflow_scripts.config.root import PLAIN_CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path)
    if config.chat_template is not None:
        tokenizer.chat_template = config.chat_template
    elif not getattr(tokenizer, "chat_template", None):
        log.info("the tokenizer has no chat template: using the project's plain one")
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device)
    return model, tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus the template's end-of-turn marker when it is a single token (so generation stops there)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for marker in ("<|end|>", "<|eot_id|>", "<|im_end|>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids


def fine_tune(
    model_path: str, pairs: list[Pair], config: SFTConfig, out: Path, *, tokenizer_path: str | None = None
) -> dict[str, Any]:
    """Fine-tune and save into ``out``; returns the facts recorded in the manifest and sft_info.json."""
    import torch
    from transformers import GenerationConfig

    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model_and_tokenizer(model_path, tokenizer_path, config, device)
    train_pairs, heldout_pairs = split_heldout(pairs, config.heldout_fraction, config.seed)
    train_items, dropped_train = encode_all(tokenizer, train_pairs, config)
    heldout_items, dropped_heldout = encode_all(tokenizer, heldout_pairs, config)
    if not train_items:
        raise InputError(f"no training pair fits in max_length {config.max_length}")
    log.info("%d training pairs, %d held out, on %s", len(train_items), len(heldout_items), device)
    pad_id = tokenizer.pad_token_id
    before = response_loss(model, heldout_items, config.batch_size, pad_id, device)
    stats = train(model, train_items, config, pad_id, device, out / METRICS_FILE)
    after = response_loss(model, heldout_items, config.batch_size, pad_id, device)
    log.info("held-out response loss %.4f -> %.4f", before, after)

    # Keep what the base model's generation config says (e.g. the converter's suppress_tokens for padded
    # vocabulary rows) and add the chat template's end-of-turn marker as a stop token.
    generation = model.generation_config or GenerationConfig()
    generation.eos_token_id = stop_token_ids(tokenizer)
    generation.pad_token_id = pad_id
    if tokenizer.bos_token_id is not None:
        generation.bos_token_id = tokenizer.bos_token_id
    model.generation_config = generation
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    with open(out / HELDOUT_FILE, "w") as handle:
        for pair in heldout_pairs:
            handle.write(
                json.dumps(
                    {"source": pair.source, "messages": conversation(pair, config.system_prompt)},
                    ensure_ascii=False,
                )
                + "\n"
            )
    facts = {
        "train_pairs": len(train_items),
        "heldout_pairs": len(heldout_items),
        "dropped_too_long": dropped_train + dropped_heldout,
        "heldout_loss_before": before,
        "heldout_loss_after": after,
        **stats,
    }
    info = {
        "system_prompt": config.system_prompt,
        "chat_template": tokenizer.chat_template,
        # a folder's name, not its path: the artifact's content must not depend on where inputs lie
        "base_model": Path(model_path).name if Path(model_path).exists() else model_path,
        **facts,
    }
    finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in info.items()}
    (out / SFT_INFO).write_text(json.dumps(finite, indent=2, ensure_ascii=False) + "\n")
    return facts


# --- stage ------------------------------------------------------------------------------------------------


def _check_upstream(path: Path, experiment: str, what: str) -> str | None:
    """Refuse an artifact made for another experiment; return its stage (None for external folders)."""
    if not (path / "manifest.json").is_file():
        log.warning("%s %s has no manifest: treated as external input", what, path)
        return None
    return read_manifest(path, experiment=experiment).stage


def _local_inputs(config: SFTConfig) -> dict[str, Path]:
    return {
        f"source_{i}": Path(s.path)
        for i, s in enumerate(config.sources)
        if s.path is not None and Path(s.path).exists()
    }


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    section = config.sft
    model = Path(args.model)
    inputs: dict[str, Path] = _local_inputs(section)
    info: dict[str, Any] = {}
    if model.exists():
        info["base_stage"] = _check_upstream(model, args.experiment, "the model")
        inputs["model"] = model
    wanted = section.generations_experiment(args.experiment)
    if wanted is not None:
        if args.generations is None:
            raise InputError("sft.sources has a generated_mcq source: pass --generations")
        generation_shards(args.generations, wanted)  # refuses another stage's or experiment's artifact
        inputs["generations"] = args.generations
    if args.tokenizer is not None:
        inputs["tokenizer"] = args.tokenizer
    pairs, counts = load_pairs(section, args.generations if wanted is not None else None)
    identity = job_identity(config, "sft", args.experiment, inputs)
    with build_artifact(args.out, identity=identity, inputs=inputs) as artifact:
        facts = fine_tune(
            str(args.model),
            pairs,
            section,
            artifact.path,
            tokenizer_path=str(args.tokenizer) if args.tokenizer else None,
        )
        artifact.counts.update({f"pairs_{k}": v for k, v in counts.items()})
        artifact.counts.update(
            {k: v for k, v in facts.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        )
        artifact.info.update(info, system_prompt=section.system_prompt, generations_experiment=wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflow_scripts.sft",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser, experiment=True)
    parser.add_argument(
        "--model", required=True, help="pre-trained Hugging Face model folder (convert artifact) or hub id"
    )
    parser.add_argument(
        "--generations",
        type=Path,
        default=None,
        help="generate artifact (Parquet shards) for a generated_mcq source",
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder when the model folder has none"
    )
    return run_main(run, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
