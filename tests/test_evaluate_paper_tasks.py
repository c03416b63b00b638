"""The paper's eight evaluation tasks, as configured, exist in the installed lm-eval (offline: its task index
lists names and configs without downloading data), and each configured metric is one the task computes."""

from __future__ import annotations

import pytest

from tests.project import REPO
from workflow_scripts.config import load_config
from workflow_scripts.config.evaluate import PAPER_TASKS


@pytest.fixture(scope="module")
def task_index():
    from lm_eval.tasks import TaskManager

    return TaskManager().task_index


def test_the_paper_configs_tasks_resolve_in_lm_eval_with_their_metrics(task_index):
    evaluation = load_config(REPO / "configs" / "paper.yaml").evaluation
    assert sorted(evaluation.tasks) == sorted(PAPER_TASKS)
    for task in evaluation.tasks:
        assert task in task_index, f"{task!r} is not an lm-eval task"
        metrics = {m["metric"] for m in task_index[task].cfg.get("metric_list", [])}
        assert evaluation.scoring[task].metric in metrics, (task, metrics)


def test_siqa_is_not_an_lm_eval_task_name(task_index):
    assert "siqa" not in task_index and "social_iqa" in task_index
