#!/usr/bin/env bash
# `dvc repro` with the configuration validated first. `dvc repro --dry` runs no command, so on its own it cannot
# notice a bad configuration (dvc.yaml's first stage, validate, only runs in a real `dvc repro`); this script
# runs the same checks as that stage, then DVC. Arguments go to `dvc repro`, e.g.
#   bash scripts/dvc-repro.sh --dry
#   CONFIG=configs/paper.yaml bash scripts/dvc-repro.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python -m workflow_scripts.validate --config "${CONFIG:-params.yaml}"
exec dvc repro "$@"
