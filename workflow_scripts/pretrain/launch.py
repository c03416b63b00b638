"""Multi-node launch: one ``torchrun`` per node of a SLURM allocation, rendezvous on its first node.

The pre-training command of a job with ``resources.stages.pretrain.nodes`` > 1 is

    srun --nodes N --ntasks-per-node 1 python -m workflow_scripts.pretrain.launch --nproc-per-node P \
        -- -m workflow_scripts.pretrain ARGS

``srun`` starts this launcher once per node; each one starts ``torchrun`` with a c10d rendezvous whose
endpoint is the first host of ``SLURM_JOB_NODELIST`` (``scontrol show hostnames`` expands it), whose id is
``SLURM_JOB_ID`` and whose size is ``SLURM_NTASKS`` (one task per node), and ``torchrun`` starts ``P`` training
processes (what follows ``--``: ``-m MODULE ARGS`` or ``SCRIPT ARGS``, as torchrun takes them). Task 0
hosts the rendezvous store. Outside SLURM
the same variables can be set by hand (the tests run two launchers on one machine that way).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

from workflow_scripts.config import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORT = 29400  # torchrun's c10d default; shifted by the job id so two jobs on one node do not collide


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compact host list (``gpu[01-03,07],login1``) as host names; ``scontrol`` when present."""
    if shutil.which("scontrol"):
        result = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.split():
            return result.stdout.split()
    hosts: list[str] = []
    for prefix, ranges in re.findall(r"([^,\[]+)(?:\[([^\]]+)\])?,?", nodelist):
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            for number in range(int(first), int(last or first) + 1):
                hosts.append(f"{prefix}{number:0{len(first)}d}")
    return hosts


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise ConfigError(f"{name} is not set: the multi-node launcher runs under srun in a SLURM allocation "
                          f"(or with SLURM_JOB_NODELIST, SLURM_JOB_ID, SLURM_NTASKS and SLURM_PROCID set by hand)")
    return value


def torchrun_command(nproc_per_node: int, program: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The ``torchrun`` command of this node, from the SLURM variables of its task."""
    hosts = expand_nodelist(_required(env, "SLURM_JOB_NODELIST"))
    job_id = _required(env, "SLURM_JOB_ID")
    nodes = int(_required(env, "SLURM_NTASKS"))
    task = int(_required(env, "SLURM_PROCID"))
    port = int(env.get("PRETRAIN_RDZV_PORT") or DEFAULT_PORT + int(re.sub(r"\D", "", job_id) or 0) % 1000)
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes),
            "--nproc-per-node", str(nproc_per_node), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{hosts[0]}:{port}", "--rdzv-id", job_id,
            "--rdzv-conf", f"is_host={'true' if task == 0 else 'false'}",
            *program]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.pretrain.launch",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc-per-node", type=int, required=True, help="training processes on this node")
    parser.add_argument("program", nargs=argparse.REMAINDER,
                        help="after --: what torchrun runs, e.g. -m workflow_scripts.pretrain --config ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        parser.error("nothing to run: give torchrun's program after --")
    try:
        command = torchrun_command(args.nproc_per_node, program, os.environ)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    log.info("node task %s: %s", os.environ.get("SLURM_PROCID"), " ".join(command))
    os.execv(command[0], command)  # torchrun takes this process's place (signals reach it directly)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
