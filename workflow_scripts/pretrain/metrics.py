"""Per-step training metrics: a TSV file ``dvc plots`` draws, its timings beside it, and model FLOPs
utilisation (MFU).

MFU = achieved model FLOPs per second / peak FLOPs per second of the GPUs used, with model FLOPs from
:func:`workflow_scripts.config.model_configs.flops_per_token` (6 N + 12 L s h per token).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

# metrics.tsv is part of the artifact (content-hashed): only what an identical rerun reproduces. The clock's
# columns go to timings.tsv, which the stage keeps beside the artifact, untracked (<artifact>.timings.tsv).
COLUMNS = ("step", "consumed_samples", "tokens", "loss", "lr", "grad_norm")
TIMING_COLUMNS = ("step", "tokens_per_s", "mfu", "elapsed_s")
TIMINGS_FILE = "timings.tsv"

# Dense bf16 peak per GPU in TFLOP/s (vendor datasheets, without sparsity), matched on the device name.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
}


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops_per_gpu: float | None, gpus: int) -> float:
    """Model FLOPs utilisation in [0, 1]; NaN when the peak is unknown (CPU)."""
    if not peak_tflops_per_gpu:
        return math.nan
    return tokens_per_s * flops_per_token / (peak_tflops_per_gpu * 1e12 * gpus)


class MetricsLog:
    """Appends one row per step to ``path`` (:data:`COLUMNS`) and its timings to ``timings.tsv`` beside it
    (:data:`TIMING_COLUMNS`); on resume keeps only the rows up to the checkpoint's step."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.files = {path: COLUMNS, path.with_name(TIMINGS_FILE): TIMING_COLUMNS}
        for file, columns in self.files.items():
            rows = self._read(file) if resume_step > 0 else []
            rows = [{k: r.get(k, "") for k in columns} for r in rows if int(r["step"]) <= resume_step]
            with open(file, "w", newline="") as handle:
                writer = csv.DictWriter(handle, columns, delimiter="\t")
                writer.writeheader()
                writer.writerows(rows)

    @staticmethod
    def _read(path: Path) -> list[dict[str, str]]:
        if not path.is_file():
            return []
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t"))

    def append(self, row: dict[str, float | int]) -> None:
        for file, columns in self.files.items():
            with open(file, "a", newline="") as handle:
                csv.DictWriter(handle, columns, delimiter="\t").writerow({k: _fmt(row.get(k)) for k in columns})


def _fmt(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.8g}"


def read_metrics(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{k: (float(v) if v != "" else math.nan) for k, v in row.items()}
                for row in csv.DictReader(handle, delimiter="\t")]
