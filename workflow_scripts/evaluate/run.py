"""Stage evaluate: zero-shot lm-evaluation-harness run of one model (pre-trained or SFT).

Runs ``lm_eval.simple_evaluate`` with the ``hf`` model on a local folder (or hub id) over the tasks of
``evaluation.tasks``: built-in lm-eval tasks and/or the local tasks of an ``eval_tasks`` artifact
(``--tasks``). An SFT model (a folder with ``sft_info.json``) is evaluated through its chat template
with the system prompt it was fine-tuned with (or ``evaluation.system_prompt``), as in the paper.

Output artifact: ``results.json`` (lm-eval's raw results less its run-only entries: date, times, git hash
and environment text go to the run sidecar ``<artifact>.run.json``), ``scores.json`` (``{"model_stage",
"chat_template", "system_prompt", "tasks": {task: {metric: {"value", "stderr"}}}}``) and, with
``evaluation.log_samples``, ``samples/<task>.jsonl`` (every request and answer).
When every task is local, the run is forced offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from workflow_scripts.config.evaluate import (
    EvaluationConfig,
)
from workflow_scripts.core.artifacts import ArtifactError, InputError, build_artifact, read_manifest
from workflow_scripts.core.cli import load_checked_config
from workflow_scripts.core.identity import job_identity
from workflow_scripts.evaluate.reader import scores_from_results
from workflow_scripts.evaluate.tasks import materialise

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
from workflow_scripts.sft.reader import SFT_INFO, is_fine_tuned, read_sft_info  # noqa: E402

MODEL_STAGES = ("pt", "sft")


def model_stage_of(model: Path) -> str:
    """'sft' for a folder fine-tuned by the sft stage, else 'pt'."""
    return "sft" if is_fine_tuned(model) else "pt"


def chat_settings(model: Path | None, stage: str, config: EvaluationConfig) -> tuple[bool, str | None]:
    """(apply the chat template?, system prompt) for this model."""
    if stage != "sft" or not config.sft_chat_template:
        return False, None
    if config.system_prompt is not None:
        return True, config.system_prompt
    if model is None or not is_fine_tuned(model):
        raise InputError(
            f"{model}: an SFT model needs {SFT_INFO} (system prompt) or evaluation.system_prompt"
        )
    info = read_sft_info(model)
    return True, info.get("system_prompt")


# lm-eval's facts of one run (clock, the working tree's git commit, the machine's description): they go to
# the run sidecar, so that results.json is the same bytes for the same model, tasks and settings.
RUN_ONLY_RESULT_KEYS = ("date", "start_time", "end_time", "total_evaluation_time_seconds", "git_hash",
                        "upper_git_hash", "pretty_env_info")


def split_run_facts(results: dict[str, Any]) -> dict[str, Any]:
    """Remove lm-eval's run-only entries from ``results`` (in place) and return them."""
    return {key: results.pop(key) for key in RUN_ONLY_RESULT_KEYS if key in results}


def portable(value: Any, work_dir: Path) -> Any:
    """``value`` with the paths of this run made location-free: the temporary work folder becomes ``<work>``,
    the project folder (the working directory) is dropped from absolute paths."""
    if isinstance(value, dict):
        return {key: portable(item, work_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, work_dir) for item in value]
    if isinstance(value, str) and "/" in value:
        value = value.replace(str(work_dir), "<work>").replace(f"{Path.cwd()}/", "")
    return value


def lm_eval_json(results: dict[str, Any], indent: int | None = 2) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(results, indent=indent, default=handle_non_serializable, ensure_ascii=False) + "\n"


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_model(
    model: str, config: EvaluationConfig, tasks_dir: Path | None, *, stage: str, work_dir: Path
) -> dict[str, Any]:
    """Run lm-eval on ``model`` (folder or hub id) and return its results dict."""
    local = Path(model) if Path(model).exists() else None
    local_names: list[str] = []
    include: list[str] = list(config.include_paths)
    if tasks_dir is not None:
        local_names = materialise(tasks_dir, work_dir / "tasks", work_dir / "datasets_cache")
        include.insert(0, str(work_dir / "tasks"))
    missing_local = [t for t in config.tasks if t in _declared_local(tasks_dir) and t not in local_names]
    if missing_local:
        raise InputError(f"{tasks_dir}: no task YAML for {missing_local}; rebuild the eval_tasks artifact")
    all_local = all(t in local_names for t in config.tasks)
    if all_local:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    apply_chat, system_prompt = chat_settings(local, stage, config)

    import lm_eval
    from lm_eval.tasks import TaskManager

    # Scanning lm-eval's ~10k built-in YAMLs takes seconds: skip it when every task is ours.
    manager = TaskManager(include_path=include or None, include_defaults=not all_local)
    log.info(
        "evaluating %s (%s) on %s; chat template %s, system prompt %r",
        model,
        stage,
        config.tasks,
        apply_chat,
        system_prompt,
    )
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": model, "dtype": config.dtype, "trust_remote_code": False},
        tasks=list(config.tasks),
        num_fewshot=0,
        batch_size=config.batch_size,
        device=_device(),
        limit=config.limit,
        bootstrap_iters=config.bootstrap_iters,
        log_samples=config.log_samples,
        system_instruction=system_prompt,
        apply_chat_template=apply_chat,
        task_manager=manager,
        random_seed=config.seed,
        numpy_random_seed=config.seed,
        torch_random_seed=config.seed,
        fewshot_random_seed=config.seed,
    )
    if results is None:
        raise ArtifactError("lm-eval returned no results (not rank 0?)")
    return results


def _declared_local(tasks_dir: Path | None) -> set[str]:
    if tasks_dir is None:
        return set()
    return set(read_manifest(tasks_dir, stage="eval_tasks").info.get("tasks", {}))


def num_parameters(results: dict[str, Any]) -> int | None:
    value = results.get("config", {}).get("model_num_parameters")
    return int(value) if isinstance(value, (int, float)) else None


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    section = config.evaluation
    model = Path(args.model)
    stage = args.model_stage
    if stage == "auto":
        stage = model_stage_of(model) if model.exists() else "pt"
    if model.exists() and (model / "manifest.json").is_file():
        read_manifest(model, experiment=args.experiment)
    inputs: dict[str, Path] = {}
    if model.exists():
        inputs["model"] = model
    if args.tasks is not None:
        inputs["tasks"] = args.tasks
    elif any(t in section.local_tasks for t in section.tasks):
        raise InputError(
            f"tasks {[t for t in section.tasks if t in section.local_tasks]} are local: pass --tasks "
            "(the eval_tasks artifact)"
        )
    with (
        build_artifact(
            args.out, identity=job_identity(config, f"evaluate_{stage}", args.experiment, inputs), inputs=inputs
        ) as artifact,
        tempfile.TemporaryDirectory() as work,
    ):
        results = evaluate_model(str(args.model), section, args.tasks, stage=stage, work_dir=Path(work))
        samples = results.pop("samples", None) or {}
        artifact.run.update(lm_eval=split_run_facts(results))
        results = portable(results, Path(work))
        for task, rows in samples.items():
            (artifact.path / "samples").mkdir(exist_ok=True)
            (artifact.path / "samples" / f"{task}.jsonl").write_text(
                "".join(lm_eval_json(row, indent=None) for row in rows)
            )
        (artifact.path / "results.json").write_text(lm_eval_json(results))
        apply_chat, system_prompt = chat_settings(model if model.exists() else None, stage, section)
        scores = {
            "model_stage": stage,
            "chat_template": apply_chat,
            "system_prompt": system_prompt,
            "tasks": scores_from_results(results),
        }
        (artifact.path / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
        artifact.info.update(
            model_stage=stage,
            model=str(args.model) if not model.exists() else model.name,
            tasks=list(section.tasks),
            num_parameters=num_parameters(results),
            chat_template=apply_chat,
            system_prompt=system_prompt,
        )
        artifact.counts.update(tasks=len(scores["tasks"]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="Hugging Face model folder (convert or sft artifact) or hub id"
    )
    parser.add_argument(
        "--tasks",
        type=Path,
        default=None,
        help="eval_tasks artifact (local task YAMLs + data); needed when any task is local",
    )
    parser.add_argument(
        "--model-stage",
        choices=("auto", *MODEL_STAGES),
        default="auto",
        help="pt or sft; auto: sft when the folder has sft_info.json",
    )
