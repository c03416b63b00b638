"""Metric selection: acc_norm for ARC-Challenge and HellaSwag, acc for the rest, and the unweighted mean."""

from __future__ import annotations

import pytest

from workflow_scripts.config.evaluate import PAPER_TASKS, EvaluationConfig, TaskScoring, paper_evaluation
from workflow_scripts.core.artifacts import InputError
from workflow_scripts.evaluate.reader import headline_mean, scores_from_results, select


def fake_results(tasks=PAPER_TASKS) -> dict:
    """lm-eval-shaped results where acc and acc_norm differ, so a wrong choice shows."""
    results = {}
    for i, task in enumerate(tasks):
        results[task] = {
            "alias": task,
            "acc,none": 0.30 + i / 100,
            "acc_stderr,none": 0.01,
            "acc_norm,none": 0.60 + i / 100,
            "acc_norm_stderr,none": "N/A",
        }
    return {"results": results, "config": {"model_num_parameters": 1234}}


def test_scores_parse_values_and_stderr():
    scores = scores_from_results(fake_results(["arc_easy"]))
    assert scores == {
        "arc_easy": {"acc": {"value": 0.30, "stderr": 0.01}, "acc_norm": {"value": 0.60, "stderr": None}}
    }


def test_paper_protocol_selects_acc_norm_only_for_arc_challenge_and_hellaswag():
    config = paper_evaluation()
    scores = scores_from_results(fake_results())
    chosen = {task: select(scores, task, config.scoring[task]) for task in config.tasks}
    for i, task in enumerate(PAPER_TASKS):
        expected = (0.60 if task in ("arc_challenge", "hellaswag") else 0.30) + i / 100
        assert chosen[task] == pytest.approx(expected), task
    mean = headline_mean(chosen, config.scoring)
    assert mean == pytest.approx(100 * sum(chosen.values()) / 8)


def test_metric_choice_is_configuration():
    config = paper_evaluation().model_copy(
        update={"scoring": {**paper_evaluation().scoring, "piqa": TaskScoring(metric="acc_norm")}}
    )
    scores = scores_from_results(fake_results())
    assert select(scores, "piqa", config.scoring["piqa"]) == pytest.approx(0.60 + 5 / 100)


def test_mean_skips_tasks_not_in_mean_and_keeps_perplexity_raw():
    config = EvaluationConfig()  # default: continuation (acc, in mean) + perplexity (not in mean)
    mean = headline_mean({"heldout_continuation": 0.5, "heldout_perplexity": 300.0}, config.scoring)
    assert mean == pytest.approx(50.0)


def test_missing_metric_or_task_is_a_clear_error():
    scores = scores_from_results(fake_results(["arc_easy"]))
    with pytest.raises(InputError, match="has no metric 'word_perplexity'"):
        select(scores, "arc_easy", TaskScoring(metric="word_perplexity"))
    with pytest.raises(InputError, match="task 'boolq' was not evaluated"):
        select(scores, "boolq", TaskScoring())
    with pytest.raises(InputError, match="needs every in_mean task"):
        headline_mean({"arc_easy": 0.3}, paper_evaluation().scoring)
