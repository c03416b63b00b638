# Sourced by the run and test scripts: keep every cache inside the project, pin threads. Hugging Face offline mode
# is the configuration's `hub.offline` (the stage commands carry the flags), not this file's: a config that names
# hub models or lm-eval's hub datasets can download them.
export XDG_CACHE_HOME="$PWD/.cache"
export HF_HOME="$PWD/.cache/huggingface"
export DVC_NO_ANALYTICS=1
export TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PATH="$PWD/.venv/bin:$PATH"
