#!/usr/bin/env bash
# Regenerate the rule-graph picture of the README (needs Graphviz's `dot`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
snakemake --rulegraph 2>/dev/null > docs/rulegraph.dot
dot -Tsvg docs/rulegraph.dot > docs/rulegraph.svg
echo "wrote docs/rulegraph.dot and docs/rulegraph.svg"
