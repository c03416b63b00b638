"""What the Snakemake front-end refuses before it plans anything."""

from __future__ import annotations

from tests.project import REPO, run


def test_snakemake_config_overrides_are_refused_with_the_way_to_override_values():
    result = run(REPO, "snakemake", "-n", "--config", "seed=7", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "snakemake --config seed=7 is not supported" in output and "--configfile COPY" in output


def test_the_front_door_recovers_from_the_lock_a_killed_run_left(tmp_path):
    """`snakemake` killed mid-run leaves .snakemake/locks; plain `snakemake` then stops with a LockException,
    `bash scripts/run.sh` releases the stale lock and goes on."""
    import os
    import signal
    import subprocess
    import time

    from tests.project import copy_project, environment

    # run.sh installs when its stamp is missing; do that here first, or the shared venv's editable install
    # would be pointed at this temporary copy.
    run(REPO, "bash", "scripts/install.sh")
    project = copy_project(tmp_path / "p")
    (project / ".venv").symlink_to(REPO / ".venv")
    env = environment(project)
    killed = subprocess.Popen(["snakemake", "--cores", "1"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    locks = project / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not any(locks.glob("*")) and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert any(locks.glob("*")), "the run ended before it took its lock"

    locked = run(project, "snakemake", "--cores", "1", check=False)  # a dry run takes no lock, a real one does
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr
    recovered = run(project, "bash", "scripts/run.sh", "-n", check=False)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "releasing the lock left by a killed run" in recovered.stderr
    assert not any(locks.glob("*"))


def test_a_fresh_project_plans_several_targets_at_once(tmp_path):
    """Two targets sharing upstream jobs, planned before any job stamp exists (Snakemake used to report
    the stamps of the second target's jobs as missing inputs)."""
    from tests.project import copy_project

    project = copy_project(tmp_path / "p")
    dry = run(project, "snakemake", "-n", "--cores", "1", "data/eval/sft/topic_t8_g2", "data/eval/sft/topic_t16_g2",
              check=False)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "MissingInputException" not in dry.stdout + dry.stderr
