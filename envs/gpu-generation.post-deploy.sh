#!/usr/bin/env bash
# Snakemake runs this in the new environment right after creating it from gpu-generation.yaml, in its working
# directory (the repository root); see cpu.post-deploy.sh for why the project is not a line of the yaml file.
# --no-deps: the project's own pins (torch, transformers, megatron-core, lm-eval) would replace vLLM's.
# By hand: conda env create -f envs/gpu-generation.yaml && conda run -n synthdiv-vllm bash envs/gpu-generation.post-deploy.sh
set -euo pipefail
grep -qs '^name = "workflow_scripts"' pyproject.toml \
  || { echo "gpu-generation.post-deploy.sh: run it from the repository root (found no workflow_scripts pyproject.toml in $PWD)" >&2; exit 1; }
python -m pip install --no-deps -e .
