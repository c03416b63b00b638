"""Report: the paper's tables (polars -> Markdown/CSV/LaTeX), figures, correlations, paper comparison.

Command line (``python -m workflow_scripts.report --help``)::

    python -m workflow_scripts.report --config params.yaml --evals data/eval \\
        [--diversity data/diversity] [--train-metrics data/pretrain data/sft] --out data/report

Light at import (pydantic, polars); matplotlib is imported when a figure is drawn.
"""
