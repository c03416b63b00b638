"""Reading sft artifacts: the one module other stages (evaluation) import from sft.

An sft artifact is a Hugging Face model folder plus ``sft_info.json`` (system prompt, chat template, data
counts, losses): a model is evaluated with the system prompt it was fine-tuned with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SFT_INFO = "sft_info.json"


def is_fine_tuned(model: Path) -> bool:
    return (model / SFT_INFO).is_file()


def read_sft_info(model: Path) -> dict[str, Any]:
    return json.loads((model / SFT_INFO).read_text())
