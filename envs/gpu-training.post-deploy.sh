#!/usr/bin/env bash
# Snakemake runs this in the new environment right after creating it from gpu-training.yaml, in its working
# directory (the repository root); see cpu.post-deploy.sh for why the project is not a line of the yaml file.
# By hand: conda env create -f envs/gpu-training.yaml && conda run -n synthdiv-train bash envs/gpu-training.post-deploy.sh
#
# Transformer Engine 2.11.0: the newest release in the range megatron-core 0.16.1 is tested with (its `dev` extra
# asks for transformer-engine[core_cu13,pytorch]>=2.9,<2.12). transformer_engine_torch is a source package whose
# extension is built against the installed torch 2.13.0, hence --no-build-isolation (an isolated build would
# compile against whatever torch pip fetches for it, and the extension would not load). The build needs, on the
# node that creates the environment:
#   - the CUDA toolkit (nvcc; CUDA_HOME or nvcc on PATH) of the CUDA major version torch was built with
#     (python -c "import torch; print(torch.version.cuda)"); it also picks transformer_engine_cu12 or _cu13;
#   - cuDNN 9 headers and libraries (the nvidia-cudnn-cu* wheel torch depends on provides them, or CUDNN_PATH);
#   - a C++17 compiler; cmake >= 3.18 and ninja (gpu-training.yaml installs both). MAX_JOBS=N limits the
#     compile jobs if the node runs out of memory.
# Without Transformer Engine pre-training still runs, on megatron-core's local layer spec (unfused, slower): the
# stage warns and records `layer_spec` (docs/cluster.md "Environments"). SYNTHDIV_SKIP_TRANSFORMER_ENGINE=1 skips it.
set -euo pipefail
grep -qs '^name = "workflow_scripts"' pyproject.toml \
  || { echo "gpu-training.post-deploy.sh: run it from the repository root (found no workflow_scripts pyproject.toml in $PWD)" >&2; exit 1; }
python -m pip install -c constraints.txt -e .
if [ "${SYNTHDIV_SKIP_TRANSFORMER_ENGINE:-0}" = 1 ]; then
  echo "gpu-training.post-deploy.sh: SYNTHDIV_SKIP_TRANSFORMER_ENGINE=1: Transformer Engine not installed;" \
       "pre-training will use megatron-core's local (unfused, slower) layer spec" >&2
else
  python -m pip install --no-build-isolation "transformer-engine[pytorch]==2.11.0"
fi
