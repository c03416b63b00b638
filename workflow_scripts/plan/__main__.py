"""Price a run before it starts: LLM requests, tokens, dollars, GPU-hours and disk, per experiment and in total.

  python -m workflow_scripts.plan --configfile configs/paper.yaml          # a text table
  python -m workflow_scripts.plan --configfile params.yaml --json          # the same as JSON

Requests: first attempts of every generation job (exact, from the grid; retries at plan.retry_rate), the
Cluster-agent judge's and the topic extractor's (counted from their settings). "after sharing": minus the
requests an experiment listed earlier also sends (content-addressed: sent once); "to send": minus what the
request cache (<data_root>/llm_cache) already answers. Tokens, GPU-hours and disk are estimates; every line
says what its numbers rest on, and the assumptions are the config's ``plan`` section. Nothing is built, no
model is loaded (a tokenizer may be, to count prompt tokens), nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflow_scripts.config import ConfigError, PipelineConfig, load_config
from workflow_scripts.plan import compute
from workflow_scripts.plan.requests import RequestLine, plan_requests

log = logging.getLogger(__name__)


@dataclass
class Plan:
    config_file: str
    requests: list[RequestLine]
    experiments: list[compute.ExperimentCompute]
    assumptions: dict[str, Any]
    totals: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config_file, "assumptions": self.assumptions, "totals": self.totals,
                "requests": [line.as_dict() | {"cost": _costs(line, self)} for line in self.requests],
                "experiments": [row.as_dict() for row in self.experiments]}


def _costs(line: RequestLine, plan: Plan) -> dict[str, dict[str, float]]:
    return plan.totals["_costs"][id(line)]


def student_vocab(config: PipelineConfig) -> int | None:
    return config.local_models.tokenizer.vocab_size if config.tokenize.tokenizer == "local" else None


def make_plan(config: PipelineConfig, config_file: str) -> Plan:
    lines = plan_requests(config)
    generations = {line.experiment: line.requests for line in lines
                   if line.stage == "generate" and line.experiment is not None}
    vocab = student_vocab(config)
    rows = compute.experiment_compute(config, generations, vocab)
    plan = Plan(config_file, lines, rows, {**config.plan.model_dump(mode="json")})
    costs = {id(line): {"all": compute.request_cost(line, config, to_send=False),
                        "to_send": compute.request_cost(line, config, to_send=True)} for line in lines}
    unique_synthetic = sum(line.completion_tokens for line in lines if line.stage == "generate")
    for name in config.synthetic_experiments():
        spec = config.experiments[name]
        external = spec.external or spec.mixed
        if external is not None and getattr(external, "unique_tokens", None):
            unique_synthetic += float(external.unique_tokens)
    gpu = {stage: sum(row.gpu_hours[stage] for row in rows) for stage in ("pretrain", "sft", "evaluate")}
    gpu |= {f"llm_{stage}": hours for stage, hours in compute.generation_gpu_hours(lines, config).items()}
    disk = {"generations": compute.generation_disk_gib(lines, config),
            "tokenized": compute.token_disk_gib(config, unique_synthetic, vocab),
            "checkpoints": sum(row.disk_gib["checkpoints"] for row in rows),
            "hf_models": sum(row.disk_gib["hf_models"] for row in rows)}
    by_model: dict[str, dict[str, float]] = {}
    for line in lines:
        entry = by_model.setdefault(line.model, {"to_send": 0.0, "list_usd": 0.0, "batch_usd": 0.0})
        entry["to_send"] += line.to_send
        for price in ("list_usd", "batch_usd"):
            entry[price] += costs[id(line)]["to_send"][price]
    plan.totals = {
        "_costs": costs,
        "cost_by_model_to_send": by_model,
        "requests": {stage: _request_totals([line for line in lines if line.stage == stage])
                     for stage in dict.fromkeys(line.stage for line in lines)},
        "cost_usd": {kind: {price: sum(c[kind][price] for c in costs.values()) for price in ("list_usd", "batch_usd")}
                     for kind in ("all", "to_send")},
        "gpu_hours": gpu | {"total": sum(gpu.values())},
        "disk_gib": disk | {"total": sum(disk.values())},
    }
    return plan


def _request_totals(lines: list[RequestLine]) -> dict[str, float]:
    unknown = any(line.cached is None for line in lines)
    return {"requests": sum(line.requests for line in lines),
            "after_sharing": sum(line.after_sharing for line in lines),
            "cached": None if unknown and not any(line.cached for line in lines) else
            sum(line.cached or 0 for line in lines),
            "to_send": sum(line.to_send for line in lines),
            "prompt_tokens": sum(line.prompt_tokens for line in lines),
            "completion_tokens": sum(line.completion_tokens for line in lines),
            "prompt_tokens_to_send": sum(line.to_send * line.prompt_tokens_per_request for line in lines),
            "completion_tokens_to_send": sum(line.to_send * line.completion_tokens_per_request for line in lines)}


# --- text output ------------------------------------------------------------------------------------------


def human(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_text(plan: Plan) -> str:
    out = [f"Plan of {plan.config_file} (estimates; nothing has run)", "", "LLM requests"]
    rows = []
    for line in plan.requests:
        cost = plan.totals["_costs"][id(line)]
        rows.append([line.stage, line.experiment or "-", line.model, human(line.requests), human(line.after_sharing),
                     human(line.cached), human(line.to_send), human(line.prompt_tokens),
                     human(line.completion_tokens), f"${cost['all']['list_usd']:,.2f}",
                     f"${cost['all']['batch_usd']:,.2f}"])
    out += _table(["stage", "experiment", "model", "requests", "after sharing", "cached", "to send",
                   "prompt tok", "completion tok", "list $", "batch $"], rows)
    out += ["", "Totals by stage (dollars of every request; 'to send' = what is still unpaid)"]
    rows = [[stage, human(t["requests"]), human(t["after_sharing"]), human(t["cached"]), human(t["to_send"]),
             human(t["prompt_tokens"]), human(t["completion_tokens"]), human(t["prompt_tokens_to_send"]),
             human(t["completion_tokens_to_send"])] for stage, t in plan.totals["requests"].items()]
    out += _table(["stage", "requests", "after sharing", "cached", "to send", "prompt tok", "completion tok",
                   "prompt tok to send", "completion tok to send"], rows)
    cost = plan.totals["cost_usd"]
    out += ["", f"Cost: ${cost['all']['list_usd']:,.2f} at list price, ${cost['all']['batch_usd']:,.2f} through the "
            f"Batch API for every request; still to pay: ${cost['to_send']['list_usd']:,.2f} list, "
            f"${cost['to_send']['batch_usd']:,.2f} batch (models without a price: $0)"]
    out += ["Still to pay, by model: " + "; ".join(
        f"{model} {human(v['to_send'])} requests ${v['list_usd']:,.0f} list / ${v['batch_usd']:,.0f} batch"
        for model, v in plan.totals["cost_by_model_to_send"].items())]
    out += ["", f"Training and evaluation (6 x parameters x tokens at MFU {plan.assumptions['mfu']:g} of "
            f"{plan.assumptions['peak_tflops']:g} peak TFLOP/s)"]
    rows = [[r.experiment, r.model, human(r.parameters), human(r.train_tokens), human(r.sft_tokens),
             f"{r.gpu_hours['pretrain']:,.1f}", f"{r.gpu_hours['sft']:,.1f}", f"{r.gpu_hours['evaluate']:,.1f}",
             f"{r.disk_gib['checkpoints'] + r.disk_gib['hf_models']:,.2f}"] for r in plan.experiments]
    out += _table(["experiment", "model", "params", "train tok", "SFT tok", "pretrain GPU-h", "SFT GPU-h",
                   "eval GPU-h", "models GiB"], rows)
    gpu, disk = plan.totals["gpu_hours"], plan.totals["disk_gib"]
    out += ["", "GPU-hours: " + ", ".join(f"{k} {v:,.1f}" for k, v in gpu.items()),
            "Disk (GiB): " + ", ".join(f"{k} {v:,.2f}" for k, v in disk.items()), "", "Notes"]
    seen: set[str] = set()
    for line in plan.requests:
        for note in line.notes:
            text = f"- {line.stage} {line.experiment or ''}: {note}".replace("  ", " ")
            key = f"{line.stage}:{note}"
            if key not in seen:
                seen.add(key)
                out.append(text)
    for row in plan.experiments[:1]:
        out += [f"- training: {note}" for note in row.notes]
    out.append("- assumptions (the config's plan section): " + json.dumps(plan.assumptions, sort_keys=True))
    return "\n".join(out) + "\n"


def public(plan: Plan) -> dict[str, Any]:
    data = plan.as_dict()
    data["totals"] = {k: v for k, v in data["totals"].items() if not k.startswith("_")}
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", "--config", dest="config", type=Path, default=Path("params.yaml"),
                        help="the configuration to price (default: params.yaml); its data_root is where the "
                        "request cache and built artifacts are looked for")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        plan = make_plan(config, str(args.config))
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(public(plan), indent=2, default=float) + "\n" if args.json else render_text(plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
