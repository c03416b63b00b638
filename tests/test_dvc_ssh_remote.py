"""Sharing artifacts over a real SSH remote: push a default run, pull it into a fresh clone, nothing to do.

An OpenSSH server (Debian's openssh-server) runs for the test only: on 127.0.0.1 and a free port, with its own
host key, configuration, authorized key and pid file in a temporary directory, public-key authentication only;
it is stopped by its process id afterwards. DVC talks to it through the dvc-ssh plugin, with a temporary HOME
and no SSH agent, so only the test's key file can authenticate and the real ~/.ssh is never read or written.
(dvc-ssh, through sshfs, does not check the server's host key against known_hosts: see docs/cluster.md.)

Installs openssh-server through scripts/install_system_deps.sh when it is missing; skipped, with the reason,
when that is not possible.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.project import copy_built_project, dvc_planned_stages, run, snakemake_planned_jobs
from tests.slurm_cluster import INSTALL_SCRIPT, free_port, stop_process, wait_until
from workflow_scripts.core.artifacts import verify_files

pytestmark = pytest.mark.slow

SBIN = ("/usr/sbin", "/sbin")
# OpenSSH's (empty) privilege separation directory, needed when sshd runs as root. Created when missing and left
# in place: a concurrent test's sshd may be using it.
PRIVSEP_DIR = Path("/run/sshd")


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def _ensure_openssh() -> None:
    if _which("sshd") and _which("ssh-keygen"):
        return
    if os.geteuid() != 0:
        pytest.skip("openssh-server is not installed and installing it needs root")
    try:
        subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{INSTALL_SCRIPT.name} did not finish in 900 s")
    if not (_which("sshd") and _which("ssh-keygen")):
        pytest.skip("openssh-server could not be installed (see scripts/install_system_deps.sh)")


def _keygen(path: Path) -> Path:
    subprocess.run(
        [_which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "synthdiv-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            return connection.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """Port, user, client key (+ fingerprint) of a key-only sshd on 127.0.0.1, stopped by pid afterwards."""
    _ensure_openssh()
    root = tmp_path_factory.mktemp("sshd")
    host_key = _keygen(root / "host_key")
    client_key = _keygen(root / "client_key")
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port, user = free_port(), getpass.getuser()
    config = root / "sshd_config"
    config.write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {root / "authorized_keys"}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
UsePAM no
# The key files live under /tmp, whose mode (1777) StrictModes rejects.
StrictModes no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    with (root / "sshd.log").open("w") as log:
        process = subprocess.Popen(
            [_which("sshd"), "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until(lambda: process.poll() is not None or _accepts_connections(port), 20, "sshd to listen")
        if process.poll() is not None:
            pytest.fail(f"sshd exited ({process.returncode}):\n{(root / 'sshd.log').read_text()}")
        fingerprint = subprocess.run(
            [_which("ssh-keygen"), "-l", "-f", f"{client_key}.pub"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()[1]
        yield {
            "port": port,
            "user": user,
            "key": client_key,
            "fingerprint": fingerprint,
            "log": root / "sshd.log",
        }
    finally:
        stop_process(process, "sshd")


@pytest.fixture
def ssh_home(tmp_path, monkeypatch) -> Path:
    """An empty HOME and no SSH agent: the user's own keys, agent and ~/.ssh/config play no part."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def _file_hashes(project: Path) -> dict[str, str]:
    """Every file of every artifact. Left out, as local state DVC does not share: the LLM request cache and the
    run sidecars beside the artifacts (<artifact>.run.json, <pretrain>.timings.tsv: facts of one run)."""
    return {
        path.relative_to(project).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((project / "data").rglob("*"))
        if path.is_file() and "llm_cache" not in path.parts and not path.name.endswith((".run.json", ".timings.tsv"))
    }


def _commit(project: Path, message: str) -> None:
    run(project, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    run(project, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message)


def test_push_over_ssh_then_a_fresh_clone_pulls_everything_and_has_nothing_to_do(
    ssh_server, ssh_home, tmp_path, dvc_build
):
    build = copy_built_project(dvc_build, tmp_path / "build")
    built = _file_hashes(build)
    assert built, "the default run produced no artifacts"

    storage = tmp_path / "remote-storage"
    storage.mkdir()
    url = f"ssh://127.0.0.1:{ssh_server['port']}{storage}"
    run(build, "dvc", "remote", "add", "--default", "shared", url)
    run(build, "dvc", "remote", "modify", "shared", "user", ssh_server["user"])
    # The key's path is the user's own business: kept out of the committed .dvc/config.
    run(build, "dvc", "remote", "modify", "--local", "shared", "keyfile", str(ssh_server["key"]))
    _commit(build, "results and the shared remote")
    pushed = run(build, "dvc", "push").stdout
    assert "pushed" in pushed, pushed
    stored = [p for p in storage.rglob("*") if p.is_file()]
    assert stored, f"nothing arrived in the remote's storage; sshd log:\n{ssh_server['log'].read_text()}"
    assert "Cache and remote 'shared' are in sync" in run(build, "dvc", "status", "--cloud").stdout

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(build), str(clone))
    run(clone, "dvc", "config", "--local", "core.site_cache_dir", str(clone / ".cache" / "dvc-site"))
    run(clone, "dvc", "remote", "modify", "--local", "shared", "keyfile", str(ssh_server["key"]))
    assert not (clone / "data").exists()
    run(clone, "dvc", "pull")

    assert "Data and pipelines are up to date" in run(clone, "dvc", "status").stdout
    assert dvc_planned_stages(clone) == set()
    assert snakemake_planned_jobs(clone) == set()
    assert _file_hashes(clone) == built
    for manifest in (clone / "data").rglob("manifest.json"):
        verify_files(manifest.parent)
    # Every transfer went through the test server, authenticated with the test's key.
    sshd_log = ssh_server["log"].read_text()
    assert f"Accepted publickey for {ssh_server['user']} from 127.0.0.1" in sshd_log, sshd_log
    assert ssh_server["fingerprint"] in sshd_log, sshd_log
