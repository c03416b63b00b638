"""The paper's headline numbers (arXiv 2410.15226, v1): mean zero-shot accuracy over its 8 tasks, in percent.

Keyed by ``(table, model size, model stage)`` then by cell name. Cell names are what a report tag's
``paper.cell`` refers to (``configs/paper.yaml``). The ratio study is reported only as a shape (accuracy
rises from 1B to 20B effective synthetic tokens and falls at 34B and 50B), so it has no numbers here.
"""

from __future__ import annotations

SIZES = ("350M", "1.4B")
STAGES = ("pt", "sft")
PAPER_TASKS = ("arc_challenge", "arc_easy", "boolq", "social_iqa", "winogrande", "piqa", "copa", "hellaswag")  # lm-eval names

TABLE6_CELLS = tuple(f"T={t},G={g}" for t in ("100K", "300K") for g in (10, 20, 30))
TABLE7_CELLS = (
    "Real only",
    "Cosmopedia v0.1",
    "Cosmopedia v0.2",
    "Topic",
    "Topic Styles",
    "Topic Styles Persona",
    "Multi-Topic Styles Persona",
)
TABLE8_CELLS = ("Llama-3.1-8B", "Mistral-7B", "GPT-3.5", "GPT-4o", "Mixed")


def _row(cells: tuple[str, ...], values: tuple[float, ...]) -> dict[str, float]:
    assert len(cells) == len(values)
    return dict(zip(cells, values))


PAPER: dict[tuple[str, str, str], dict[str, float]] = {
    ("table6", "350M", "pt"): _row(TABLE6_CELLS, (50.12, 50.26, 50.50, 50.65, 51.28, 51.05)),
    ("table6", "350M", "sft"): _row(TABLE6_CELLS, (51.43, 51.83, 51.96, 52.38, 53.04, 52.62)),
    ("table6", "1.4B", "pt"): _row(TABLE6_CELLS, (54.86, 55.02, 55.06, 55.30, 55.81, 55.24)),
    ("table6", "1.4B", "sft"): _row(TABLE6_CELLS, (57.57, 58.19, 58.20, 58.03, 58.65, 58.16)),
    ("table7", "350M", "pt"): _row(TABLE7_CELLS, (48.94, 51.61, 51.59, 51.40, 51.81, 51.92, 51.74)),
    ("table7", "350M", "sft"): _row(TABLE7_CELLS, (50.00, 52.64, 53.29, 53.03, 53.37, 54.29, 54.06)),
    ("table7", "1.4B", "pt"): _row(TABLE7_CELLS, (54.76, 56.25, 55.84, 56.15, 56.74, 57.82, 56.99)),
    ("table7", "1.4B", "sft"): _row(TABLE7_CELLS, (57.16, 59.46, 59.46, 59.88, 60.97, 61.32, 60.59)),
    ("table8", "350M", "pt"): _row(TABLE8_CELLS, (51.22, 50.86, 51.23, 51.61, 51.72)),
    ("table8", "350M", "sft"): _row(TABLE8_CELLS, (52.32, 52.17, 52.36, 52.85, 53.02)),
}

RATIO_SHAPE = (
    "accuracy rises from 1B to 20B effective synthetic tokens next to 34B real tokens, "
    "then falls at 34B and 50B"
)


def cells(table: str) -> tuple[str, ...]:
    return {"table6": TABLE6_CELLS, "table7": TABLE7_CELLS, "table8": TABLE8_CELLS}.get(table, ())


def paper_value(table: str, size: str, stage: str, cell: str) -> float | None:
    return PAPER.get((table, size, stage), {}).get(cell)
