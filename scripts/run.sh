#!/usr/bin/env bash
# Set up the environment (first time only) and run the embedded default pipeline end to end.
# Extra arguments go to Snakemake, e.g.  bash scripts/run.sh --cores 2 -n
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source scripts/env.sh
exec snakemake --cores "${CORES:-2}" "$@"
