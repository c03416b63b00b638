"""A real single-node SLURM cluster for tests: munge + slurmctld + slurmd on loopback, with one fake GPU.

Debian's slurm-wlm and munge (installed by ``scripts/install_system_deps.sh``, which this module runs when
they are missing) are started as root, each by its own command in the foreground, with every file
(configuration, key, sockets, state, logs, pid files) in a temporary directory; :meth:`SlurmCluster.stop` ends
exactly those processes by their ids. Nothing is written under /etc, /run or /var.

The configuration does not live at the default path (/etc/slurm/slurm.conf), so clients find it through
``SLURM_CONF``. The Snakemake SLURM jobstep plugin removes every ``SLURM_*`` variable before its nested
``srun`` inside a job, so :attr:`SlurmCluster.bin_dir` holds small wrappers (``sbatch``, ``srun``, ``squeue``
...) that set ``SLURM_CONF`` and run the real command: put it first on PATH (:meth:`SlurmCluster.environment`
does) and PATH, exported into every job, carries it to the nested ``srun`` as well.

Run ``python -m tests.slurm_cluster`` (as root) to start one by hand; it prints the environment to use and
stops the cluster on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / "scripts" / "install_system_deps.sh"
SBIN = ("/usr/sbin", "/sbin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = (
    "sbatch",
    "srun",
    "squeue",
    "scontrol",
    "sinfo",
    "scancel",
    "sacct",
    "sacctmgr",
    "sshare",
    "salloc",
)
CLUSTER_NAME = "synthdiv-test"
PARTITION = "debug"
# Long enough that `squeue --states=all` still lists finished jobs when the Snakemake plugin polls with squeue
# (it wants MinJobAge >= 3x its first status interval) and when the tests read the job history afterwards.
MIN_JOB_AGE_S = 3600
DEF_MEM_PER_CPU_MB = 1000


class SlurmUnavailable(RuntimeError):
    """SLURM cannot start here (not root, or packages missing and not installable): the message says why."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def ensure_installed(timeout_s: float = 900) -> None:
    """Install slurm-wlm, munge (and openssh-server) with the project script when missing; raise why not."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("a real SLURM test cluster needs root (munged/slurmd run as root)")
    if all(_which(name) for name in (*DAEMONS, *CLIENTS[:5])):
        return
    try:
        result = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{INSTALL_SCRIPT.name} did not finish in {timeout_s:.0f} s") from None
    missing = [name for name in (*DAEMONS, *CLIENTS[:5]) if not _which(name)]
    if result.returncode != 0 or missing:
        raise SlurmUnavailable(
            f"cannot install slurm-wlm/munge (missing {missing}; {INSTALL_SCRIPT.name} exited "
            f"{result.returncode}: {result.stderr.strip()[-500:]})"
        )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bound then released; races are unlikely on one machine)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll ``predicate`` until truthy; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def stop_process(process: subprocess.Popen, name: str, timeout_s: float = 15) -> None:
    """SIGTERM the process we started (by its pid), then SIGKILL it if still there after ``timeout_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", name, process.pid, timeout_s)
        process.kill()
        process.wait(timeout=timeout_s)


@dataclass
class SlurmCluster:
    root: Path
    node: str
    cpus: int
    gpus: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: os.environ) with the client wrappers first on PATH and SLURM_CONF set."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["SLURM_CONF"] = str(self.conf)
        for key in [k for k in env if k.startswith(("SBATCH_", "SRUN_", "SALLOC_"))]:
            del env[key]
        return env

    def run(self, *command: str, timeout_s: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            command, env=self.environment(), capture_output=True, text=True, timeout=timeout_s
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def node_state(self) -> str:
        result = self.run("sinfo", "--noheader", "--Node", "--format=%T", check=False, timeout_s=10)
        return result.stdout.strip() if result.returncode == 0 else ""

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld remembers (finished ones for MinJobAge), as `scontrol show job` fields."""
        out = self.run("scontrol", "--oneliner", "show", "job").stdout
        return [
            dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")
        ]

    def wait_for_jobs(self, timeout_s: float = 300) -> None:
        """Wait until no job is pending, running or completing."""

        def idle() -> bool:
            return not self.run("squeue", "--noheader", "--format=%i", timeout_s=10).stdout.strip()

        wait_until(idle, timeout_s, "the SLURM queue to drain", interval_s=0.5)

    def daemon_logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def stop(self) -> None:
        """Cancel our jobs, then stop slurmd, slurmctld and munged, each by the pid we started it with."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            try:
                ids = self.run(
                    "squeue", "--noheader", "--format=%i", check=False, timeout_s=10
                ).stdout.split()
                if ids:
                    self.run("scancel", *ids, check=False, timeout_s=10)
                    wait_until(
                        lambda: (
                            not self.run(
                                "squeue", "--noheader", "--format=%i", check=False, timeout_s=10
                            ).stdout.strip()
                        ),
                        30,
                        "cancelled jobs to end",
                    )
            except (subprocess.TimeoutExpired, TimeoutError, OSError) as error:
                log.warning("could not cancel the remaining jobs: %s", error)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is not None:
                stop_process(process, name)


def _node_line(node: str, gpus: int) -> str:
    """The node as slurmd -C sees it (CPUs, sockets, memory), on 127.0.0.1, with ``gpus`` fake GPUs."""
    hardware = subprocess.run(
        [_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30, check=True
    )
    first = hardware.stdout.splitlines()[0]
    fields = dict(re.findall(r"(\w+)=(\S+)", first))
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    parts = [f"NodeName={node}", "NodeAddr=127.0.0.1", "NodeHostname=" + node]
    parts += [f"{key}={fields[key]}" for key in keep if key in fields]
    if gpus:
        parts.append(f"Gres=gpu:{gpus}")
    return " ".join(parts + ["State=UNKNOWN"])


def write_config(root: Path, node: str, gpus: int) -> int:
    """slurm.conf + gres.conf under ``root/etc``; returns the node's CPU count."""
    etc = root / "etc"
    for sub in ("etc", "state", "spool", "log", "run", "munge", "bin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    node_line = _node_line(node, gpus)
    cpus = int(re.search(r"CPUs=(\d+)", node_line).group(1))
    ctld_port, slurmd_port = free_port(), free_port()
    srun_low = free_port()
    conf = f"""\
# Written by tests/slurm_cluster.py: one node on loopback, no accounting database, no cgroups.
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
# Bind to the configured (loopback) addresses instead of every interface.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SrunPortRange={srun_low}-{srun_low + 20}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root / "munge" / "munge.socket"}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "run" / "slurmctld.pid"}
SlurmdPidFile={root / "run" / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
# No cgroup plugins: processes are tracked through /proc and tasks are not confined, so no cgroup.conf is
# needed and nothing under /sys/fs/cgroup is touched.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, one job asking no memory would be given the whole node.
DefMemPerCPU={DEF_MEM_PER_CPU_MB}
MinJobAge={MIN_JOB_AGE_S}
ReturnToService=2
MailProg=/bin/true
GresTypes=gpu
{node_line}
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    (etc / "slurm.conf").write_text(conf)
    # A fake GPU: /dev/null stands in for the device file; --gpus=1 is granted and CUDA_VISIBLE_DEVICES set.
    gres = "AutoDetect=off\n" + (f"NodeName={node} Name=gpu File=/dev/null\n" if gpus else "")
    (etc / "gres.conf").write_text(gres)
    for client in CLIENTS:
        real = _which(client)
        if real is None:
            continue
        wrapper = root / "bin" / client
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="{etc / "slurm.conf"}" exec {real} "$@"\n')
        wrapper.chmod(0o755)
    return cpus


def _start(name: str, command: list[str], root: Path) -> subprocess.Popen:
    out = (root / "log" / f"{name}.out").open("ab")
    env = {
        "PATH": os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN),
        "SLURM_CONF": str(root / "etc" / "slurm.conf"),
        "LANG": "C.UTF-8",
    }
    try:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    finally:
        out.close()


def _start_munge(root: Path) -> subprocess.Popen:
    munge = root / "munge"
    munge.chmod(0o755)
    key = munge / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    socket_path = munge / "munge.socket"
    process = _start(
        "munged",
        [
            _which("munged"),
            "--foreground",
            "--force",
            f"--socket={socket_path}",
            f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'munged.seed'}",
            f"--log-file={root / 'log' / 'munged.log'}",
        ],
        root,
    )
    wait_until(lambda: socket_path.exists() or process.poll() is not None, 15, "munged's socket")
    if process.poll() is not None:
        raise RuntimeError(
            f"munged exited ({process.returncode}): {(root / 'log' / 'munged.out').read_text()}"
        )
    return process


def start(root: Path, gpus: int = 1, timeout_s: float = 60) -> SlurmCluster:
    """Configure and start a one-node cluster under ``root``; returns once the node is idle."""
    ensure_installed()
    root.mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cpus = write_config(root, node, gpus)
    cluster = SlurmCluster(root=root, node=node, cpus=cpus, gpus=gpus)
    conf = str(cluster.conf)
    try:
        cluster.processes["munged"] = _start_munge(root)
        cluster.processes["slurmctld"] = _start(
            "slurmctld", [_which("slurmctld"), "-D", "-i", "-f", conf], root
        )
        wait_until(
            lambda: (
                cluster.run("scontrol", "ping", check=False, timeout_s=10).returncode == 0
                or cluster.processes["slurmctld"].poll() is not None
            ),
            timeout_s,
            "slurmctld to answer",
        )
        cluster.processes["slurmd"] = _start("slurmd", [_which("slurmd"), "-D", "-N", node, "-f", conf], root)

        def ready() -> bool:
            for name, process in cluster.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode})")
            return cluster.node_state() == "idle"

        wait_until(ready, timeout_s, f"node {node} to be idle")
    except BaseException as error:
        logs = cluster.daemon_logs() + "".join(
            f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted((root / "log").glob("*.out"))
        )
        cluster.stop()
        if isinstance(error, (RuntimeError, TimeoutError)):
            raise RuntimeError(f"could not start SLURM: {error}\n{logs}") from error
        raise
    log.info("SLURM cluster %s up under %s (node %s, %d CPUs, %d GPU)", CLUSTER_NAME, root, node, cpus, gpus)
    return cluster


@contextmanager
def running_cluster(root: Path, gpus: int = 1) -> Iterator[SlurmCluster]:
    cluster = start(root, gpus=gpus)
    try:
        yield cluster
    finally:
        cluster.stop()


if __name__ == "__main__":
    import tempfile

    logging.basicConfig(level=logging.INFO)
    with tempfile.TemporaryDirectory(prefix="slurm-") as tmp, running_cluster(Path(tmp)) as cluster:
        print(f"export PATH={cluster.bin_dir}:$PATH SLURM_CONF={cluster.conf}   # Ctrl-C stops the cluster")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
