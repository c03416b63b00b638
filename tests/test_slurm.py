"""The pipeline through a real SLURM cluster: every job an sbatch job, GPU rules ask for --gpus, same results.

A single-node SLURM (tests/slurm_cluster.py: munge, slurmctld, slurmd on loopback, one fake GPU) runs the
default pipeline of a project copy with `snakemake --profile profiles/slurm` exactly as docs/cluster.md tells
users to on a cluster without an accounting database (`--slurm-status-command squeue`), only with faster
polling.

Rules the pipeline does not have yet (a GPU rule, a failing rule, a torchrun rule) come from a test-only
Snakefile written into the copy, which includes the project's Snakefile unchanged and adds three probe rules;
the probes are asked for as explicit targets, so the default target and every project file stay as they are.

Needs root (skipped otherwise, with the reason); installs slurm-wlm and munge through
scripts/install_system_deps.sh when they are missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.project import assert_same_deterministic_results, copy_project, environment, snakemake_planned_jobs
from tests.slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_installed, start

pytestmark = pytest.mark.slow

SNAKEMAKE_TIMEOUT_S = 1800  # bounded, with room for the full default pipeline on 2 shared cores
# The documented setting for clusters without an accounting database, plus fast polling for a toy workflow.
SLURM_ARGS = (
    "--profile",
    "profiles/slurm",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
)
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
TEST_SNAKEFILE = "Snakefile.cluster-test"

PROBE_RULES = """\
# Test-only (tests/test_slurm.py): the project's workflow plus three probes, asked for as explicit targets.
include: "Snakefile"


rule gpu_probe:
    output:
        "cluster_probe/gpu.json",
    resources:
        gpu=1,
        mem_mb=500,
        runtime=5,
    shell:
        "python cluster_probe_env.py {output}"


rule failing_probe:
    output:
        "cluster_probe/failed.txt",
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "echo 'probe failure: exiting with 3' >&2; exit 3"


# The launch pattern of the pre-training stage: the rule's resources say how many processes torchrun starts.
rule torchrun_probe:
    output:
        "cluster_probe/allreduce.json",
    threads: 2
    resources:
        nproc=2,
        mem_mb=2000,
        runtime=10,
    shell:
        "torchrun --standalone --nnodes 1 --nproc_per_node {resources.nproc} "
        "cluster_probe_allreduce.py {output}"
"""

ENV_PROBE = """\
import json, os, sys
keys = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE")
with open(sys.argv[1], "w") as out:
    json.dump({key: os.environ.get(key) for key in keys}, out)
"""

ALLREDUCE_PROBE = '''\
"""Two processes under torchrun (gloo, CPU): all-reduce a tensor and record who took part."""
import json, os, sys
import torch
import torch.distributed as dist

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
me = {"rank": rank, "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
      "local_world_size": int(os.environ["LOCAL_WORLD_SIZE"])}
everyone = [None] * world
dist.all_gather_object(everyone, me)
if rank == 0:
    with open(sys.argv[1], "w") as out:
        json.dump({"world_size": world, "sum": value.item(), "ranks": everyone}, out)
dist.destroy_process_group()
'''


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the SLURM extra: bash scripts/install.sh --slurm")
    try:
        ensure_installed()
    except SlurmUnavailable as reason:
        pytest.skip(str(reason))
    # A short root: munge's socket path must stay under the 108-character limit of Unix sockets.
    root = Path(tempfile.mkdtemp(prefix="slurm-"))
    started = start(root)
    yield started
    started.stop()
    shutil.rmtree(root, ignore_errors=True)


def _artifact_files(project: Path) -> dict[str, dict[str, str]]:
    return {
        manifest.parent.relative_to(project).as_posix(): json.loads(manifest.read_text())["files"]
        for manifest in sorted((project / "data").rglob("manifest.json"))
    }


def snakemake_on_slurm(cluster: SlurmCluster, project: Path, *args: str) -> subprocess.CompletedProcess:
    env = cluster.environment(environment(project))
    env["GLOO_SOCKET_IFNAME"] = "lo"  # torchrun jobs: collective traffic on loopback only
    try:
        return subprocess.run(
            ["snakemake", *SLURM_ARGS, *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=SNAKEMAKE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"snakemake on SLURM did not finish in {SNAKEMAKE_TIMEOUT_S} s:\n{error.stdout}\n"
            f"{error.stderr}\n{cluster.daemon_logs()}"
        ) from None


def submissions(output: str) -> dict[str, Path]:
    """SLURM job id -> its SLURM log file, for every job the plugin submitted."""
    return {job_id: Path(log) for job_id, log in SUBMITTED.findall(output)}


def job_name_from_log(log: Path, slurm_logdir: Path) -> str:
    """``rule`` or ``rule--experiment`` from logs/slurm/rule_<rule>[/<wildcards>]/<jobid>.log."""
    parts = log.relative_to(slurm_logdir).parts
    rule = parts[0].removeprefix("rule_")
    return rule if len(parts) == 2 else f"{rule}--{parts[1]}"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("slurm_project"))
    (project / TEST_SNAKEFILE).write_text(PROBE_RULES)
    (project / "cluster_probe_env.py").write_text(ENV_PROBE)
    (project / "cluster_probe_allreduce.py").write_text(ALLREDUCE_PROBE)
    return project


@pytest.fixture(scope="module")
def slurm_build(cluster, project):
    planned = snakemake_planned_jobs(project)
    started = time.monotonic()
    result = snakemake_on_slurm(cluster, project)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{output}\n{cluster.daemon_logs()}"
    return {"planned": planned, "output": output, "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def local_build(snakemake_build) -> Path:
    return snakemake_build  # the session's local build of the default pipeline


def test_every_job_of_the_default_pipeline_ran_as_a_slurm_job(cluster, project, slurm_build):
    output = slurm_build["output"]
    submitted = submissions(output)
    slurm_logdir = project / "logs" / "slurm"
    assert {job_name_from_log(log, slurm_logdir) for log in submitted.values()} == slurm_build["planned"]
    assert len(submitted) == len(slurm_build["planned"])
    # Only the target rule `all` (no command) runs in the Snakemake process itself.
    assert set(re.findall(r"^localrule (\w+):", output, re.M)) == {"all"}

    jobs = {job["JobId"]: job for job in cluster.jobs()}
    for job_id, log in submitted.items():
        record = jobs[job_id]
        assert record["JobState"] == "COMPLETED", record
        assert record["StdOut"] == str(log)
        assert "gpu" not in record.get("TresPerJob", ""), f"a CPU rule asked for a GPU: {record}"
        # The job's own Snakemake ran the rule on the node, under SLURM.
        text = log.read_text()
        rule = job_name_from_log(log, slurm_logdir).split("--")[0]
        assert f"rule {rule}:" in text and "1 of 1 steps (100%) done" in text, text


def test_slurm_results_equal_a_local_run(project, slurm_build, local_build):
    assert_same_deterministic_results(project, local_build)
    assert set(_artifact_files(project)) == set(_artifact_files(local_build))


def test_after_the_slurm_run_nothing_is_left_to_do(project, slurm_build):
    assert snakemake_planned_jobs(project) == set()


def test_a_gpu_rule_asks_slurm_for_gpus(cluster, project, slurm_build):
    result = snakemake_on_slurm(cluster, project, "--verbose", "-s", TEST_SNAKEFILE, "cluster_probe/gpu.json")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"sbatch call: sbatch .*--gpus=1\b", output), output
    ((job_id, _log),) = submissions(output).items()
    record = next(job for job in cluster.jobs() if job["JobId"] == job_id)
    assert record["TresPerJob"] == "gres:gpu:1" and record["JobState"] == "COMPLETED", record
    seen = json.loads((project / "cluster_probe" / "gpu.json").read_text())
    assert seen["SLURM_JOB_ID"] == job_id
    assert seen["CUDA_VISIBLE_DEVICES"] == "0"  # SLURM granted the node's one (fake) GPU


def test_a_job_failing_on_slurm_fails_the_workflow_and_shows_its_slurm_log(cluster, project, slurm_build):
    result = snakemake_on_slurm(cluster, project, "-s", TEST_SNAKEFILE, "cluster_probe/failed.txt")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    ((job_id, log),) = submissions(output).items()
    error = output[output.index("Error in rule failing_probe") :]
    assert str(log) in error, error
    assert f"SLURM-job '{job_id}' failed" in error
    assert "probe failure: exiting with 3" in log.read_text()
    record = next(job for job in cluster.jobs() if job["JobId"] == job_id)
    assert record["JobState"] == "FAILED", record
    assert not (project / "cluster_probe" / "failed.txt").exists()


def test_torchrun_starts_the_rule_s_number_of_processes_in_one_slurm_job(cluster, project, slurm_build):
    result = snakemake_on_slurm(cluster, project, "-s", TEST_SNAKEFILE, "cluster_probe/allreduce.json")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    ((job_id, _log),) = submissions(output).items()
    record = next(job for job in cluster.jobs() if job["JobId"] == job_id)
    assert record["NumCPUs"] == "2", record  # threads: 2 -> --cpus-per-task=2
    done = json.loads((project / "cluster_probe" / "allreduce.json").read_text())
    assert done["world_size"] == 2 and done["sum"] == 3.0  # ranks contribute 1 and 2
    assert [r["rank"] for r in done["ranks"]] == [0, 1]
    assert len({r["pid"] for r in done["ranks"]}) == 2
    assert {r["slurm_job_id"] for r in done["ranks"]} == {job_id}
    assert {r["local_world_size"] for r in done["ranks"]} == {2}


def test_the_pretrain_rule_launches_torchrun_with_the_processes_its_resources_ask_for(cluster, project, slurm_build):
    """The real pre-training rule, given `resources.stages.pretrain: {cpus: 2, nproc: 2}`, runs as one SLURM
    job of 2 cores in which torchrun starts 2 data-parallel processes (gloo on CPU)."""
    params = project / "params.yaml"
    default = "  default: {cpus: 1, mem_mb: 4000, runtime: 60}\n"
    assert default in params.read_text()
    params.write_text(params.read_text().replace(
        default, default + "  stages:\n    pretrain: {cpus: 2, nproc: 2}\n"))
    result = snakemake_on_slurm(cluster, project, "data/pretrain/real_only")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "torchrun --standalone --nnodes 1 --nproc_per_node 2 -m workflow_scripts.pretrain" in output, output
    ((job_id, _log),) = submissions(output).items()
    record = next(job for job in cluster.jobs() if job["JobId"] == job_id)
    assert record["NumCPUs"] == "2" and record["JobState"] == "COMPLETED", record
    manifest = json.loads((project / "data" / "pretrain" / "real_only" / "manifest.json").read_text())
    assert manifest["info"]["world_size"] == 2
