"""Evaluation with lm-evaluation-harness: local task data (``eval_tasks``), one run per model (``evaluate``).

Command lines (``python -m workflow_scripts.evaluate <command> --help`` for details)::

    python -m workflow_scripts.evaluate tasks --config params.yaml --corpus data/real_corpus \\
        --out data/eval/tasks
    python -m workflow_scripts.evaluate run --config params.yaml --experiment EXP --model DIR \\
        [--tasks data/eval/tasks] [--model-stage auto|pt|sft] --out data/eval/pt/EXP

Light at import: torch and lm-eval are imported only when a run starts. The configuration section lives in
:mod:`workflow_scripts.config.evaluate`; ``reader`` is what other stages import.
"""
