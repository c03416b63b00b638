#!/usr/bin/env bash
# System packages for the cluster tests (tests/test_slurm.py, tests/test_dvc_ssh_remote.py): a real single-node
# SLURM (slurm-wlm + munge) and an SSH server for the DVC SSH remote. Debian/Ubuntu only, as root.
#
# Idempotent: installs only what is missing (a second run only checks). Never starts a service: the tests start
# munged, slurmctld, slurmd and sshd themselves, on loopback, and stop them by process id. Without root or apt-get
# it prints why and exits 0, and the tests that need these packages skip with that reason.
set -euo pipefail

PACKAGES=(slurm-wlm munge openssh-server)
BINARIES=(slurmctld slurmd munged sshd)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system_deps: not root; cannot install ${missing[*]} (the SLURM/SSH tests will be skipped)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: no apt-get; cannot install ${missing[*]} (the SLURM/SSH tests will be skipped)" >&2
  exit 0
fi

# Keep the packages' maintainer scripts from starting daemons (sshd on 0.0.0.0:22, munged, slurmd):
# a policy-rc.d answering 101 ("action forbidden") unless the machine already has one.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  added_policy=1
fi
cleanup() { if [ "$added_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get update -qq
timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for binary in "${BINARIES[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$binary" >/dev/null || { echo "install_system_deps: $binary missing after install" >&2; exit 1; }
done
echo "install_system_deps: installed ${missing[*]}"
