#!/usr/bin/env bash
# Set up the environment (first time only) and run the embedded default pipeline end to end.
# Extra arguments go to Snakemake, e.g.  bash scripts/run.sh --cores 2 -n
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
source scripts/env.sh

# A run that was killed leaves its lock in .snakemake/locks, and every later run would stop with a
# LockException. The lock is stale when no Snakemake process works in this directory: release it.
snakemake_running_here() {
  local here proc
  here=$(pwd -P)
  for proc in /proc/[0-9]*; do
    [ "$proc" = "/proc/$$" ] && continue
    [ "$(readlink "$proc/cwd" 2>/dev/null)" = "$here" ] || continue
    tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -qE '(^|[/ ])snakemake( |$)' && return 0
  done
  return 1
}
if compgen -G ".snakemake/locks/*" >/dev/null; then
  if [ ! -d /proc/self ]; then
    echo "run.sh: .snakemake/locks holds a lock; if no other Snakemake runs here, release it with: snakemake --unlock" >&2
  elif snakemake_running_here; then
    echo "run.sh: another Snakemake process is running in $(pwd -P); wait for it to finish" >&2
    exit 1
  else
    echo "run.sh: releasing the lock left by a killed run (no Snakemake process is running here)" >&2
    snakemake --unlock >/dev/null
  fi
fi
exec snakemake --cores "${CORES:-2}" "$@"
