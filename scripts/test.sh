#!/usr/bin/env bash
# Set up the environment (first time only) and run the whole test suite, slow end-to-end tests included.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
# --slurm: the suite also tests the SLURM profile (a local one-node cluster, tests/test_slurm.py).
bash scripts/install.sh --slurm
source scripts/env.sh
# The tests never reach the network (this workplace has none): offline whatever a configuration says.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec python -m pytest "$@"
