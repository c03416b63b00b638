"""The SFT stage's model loading, optimisation loop and saving of the fine-tuned Hugging Face folder."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from workflow_scripts.config.sft import SFTConfig
from workflow_scripts.core.artifacts import InputError
from workflow_scripts.sft.data import IGNORE_INDEX, Pair, collate, conversation, encode_all, split_heldout
from workflow_scripts.sft.reader import SFT_INFO

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
HELDOUT_FILE = "heldout.jsonl"


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak LR at optimiser step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def compute_precision(dtype: str, device: str) -> contextlib.AbstractContextManager:
    """Autocast for bfloat16 compute; float32 runs as it is. The parameters are float32 either way: at the
    paper's LR of 2e-5 most AdamW updates are below bfloat16's resolution and would be lost on bf16 weights."""
    import torch

    if dtype == "bfloat16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def response_loss(
    model: Any, items: list[dict[str, list[int]]], batch_size: int, pad_id: int, device: str,
    dtype: str = "float32",
) -> float:
    """Mean loss per response token over ``items`` (NaN for none)."""
    import torch

    if not items:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), compute_precision(dtype, device):
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
        writer.writerow(["step", "epoch", "loss", "lr", "grad_norm", "tokens"])  # no clock: it is hashed
        for micro in range(total_micro):
            if not order:
                order = list(range(len(items)))
                rng.shuffle(order)
            batch_idx, order = order[: config.batch_size], order[config.batch_size :]
            batch = {k: v.to(device) for k, v in collate([items[i] for i in batch_idx], pad_id).items()}
            with compute_precision(config.dtype, device):
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
                ]
            )
            bar.update(1)
            if step % config.log_every == 0 or step == total_steps:
                log.info("step %d/%d loss %.4f lr %.3g", step, total_steps, last_loss, lr)
    log.info("trained %d steps (%d response tokens) in %.1f s", step, tokens, time.perf_counter() - started)
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
    # float32 master weights whatever the stored dtype; config.dtype is the compute dtype (autocast)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
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
    before = response_loss(model, heldout_items, config.batch_size, pad_id, device, config.dtype)
    stats = train(model, train_items, config, pad_id, device, out / METRICS_FILE)
    after = response_loss(model, heldout_items, config.batch_size, pad_id, device, config.dtype)
    log.info("held-out response loss %.4f -> %.4f", before, after)

    # Keep what the base model's generation config says (e.g. the converter's suppress_tokens for padded
    # vocabulary rows) and add the chat template's end-of-turn marker as a stop token.
    generation = model.generation_config or GenerationConfig()
    generation.eos_token_id = stop_token_ids(tokenizer)
    generation.pad_token_id = pad_id
    if tokenizer.bos_token_id is not None:
        generation.bos_token_id = tokenizer.bos_token_id
    model.generation_config = generation
    model.save_pretrained(out, safe_serialization=True)  # float32: the master weights, not a rounded copy
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
