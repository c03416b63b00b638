# Shared set-up: validate the configuration once, plan every job, and give the rules their fields.
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

from workflow_scripts import dvc_yaml, pipeline, validate
from workflow_scripts.config import ConfigError
from workflow_scripts.core import api_limits, environments

STARTED = time.time()

# Every stage command reads the config file itself, so `snakemake --config key=value` could only change
# what Snakemake plans, not what the jobs do: refuse it and say how to override values instead.
if workflow.config_settings.config:
    raise WorkflowError(
        f"snakemake --config {' '.join(f'{k}={v}' for k, v in workflow.config_settings.config.items())} is not "
        "supported: each stage reads the configuration file, not Snakemake's config. Put the change in a copy "
        "of params.yaml and run `snakemake --configfile COPY` (the copy replaces params.yaml as a whole)."
    )

# A --configfile on the command line replaces params.yaml entirely (its experiment grid is not merged
# into the default one); the stage commands receive that same file.
def _relative(path):
    """Snakemake hands over --configfile paths made absolute; commands keep them relative to the project."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


CONFIG_FILE = _relative(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "params.yaml"
# Every check runs here, while Snakemake plans (workflow_scripts/validate.py: schema, cross-field constraints,
# external input files, the plan), so `snakemake -n` already fails on a configuration that would: no job starts.
# The message alone (each problem with its key path or file), without Snakemake's traceback.
try:
    CFG, _PLAN = validate.validate(CONFIG_FILE)
except ConfigError as error:
    sys.exit(str(error))
JOBS = {job.name: job for job in _PLAN}


wildcard_constraints:
    experiment="|".join(re.escape(name) for name in CFG.experiments),


def _job(stage, wildcards):
    experiment = wildcards.get("experiment")
    return JOBS[pipeline.job_name(stage, experiment)]


def stamp_path(job):
    return Path(".snakemake", "fingerprints", f"{job.name}.txt")


def create_missing_stamps():
    """Every job's stamp exists before Snakemake builds its DAG: Snakemake caches what it found missing, so a
    stamp first written while it plans (by stale_stamp) could still count as missing for another target."""
    for job in JOBS.values():
        stamp = stamp_path(job)
        if not stamp.is_file():
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(job.fingerprint)
            os.utime(stamp, (0, 0))


create_missing_stamps()


def stale_stamp(job, current):
    """An input file dated now when the job's existing artifact is stale, else dated 1970.

    Rebuild decisions come from the artifacts themselves (pipeline.artifact_is_current: the manifest's
    fingerprint and input content ids), not from mtimes, because DVC does not keep mtimes when it
    checks files out. A current artifact gets ancient() inputs; a stale one gets plain inputs (so
    Snakemake also reruns its dependents) and this stamp dated now (so Snakemake reruns it).
    """
    stamp = stamp_path(job)
    stale = not current and Path(job.out).exists()
    # Snakemake also compares a small input's checksum with the one it recorded: a stale stamp's content
    # changes too, so that it counts as updated whatever Snakemake's metadata holds.
    content = f"{job.fingerprint} stale {time.time()}" if stale else job.fingerprint
    if not stamp.is_file() or stamp.read_text() != content:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(content)
    moment = time.time() if stale else 0
    os.utime(stamp, (moment, moment))
    return stamp.as_posix()


def planned_externals(spec):
    """The stage's external files; with WORKFLOW_SCRIPTS_INPUT_CHECKS=warn (planning a configuration whose data
    lives elsewhere, e.g. `snakemake -n` on the paper's) the missing ones are left out, so the job graph still
    builds: validate.py has warned about each, and the job that reads one fails."""
    files = list(spec.externals(CFG))
    if os.environ.get(validate.INPUT_CHECKS) == "warn":
        files = [f for f in files if Path(f).exists()]
    return files


def stage_input(stage):
    spec = pipeline.STAGES[stage]

    def inputs(wildcards):
        job = _job(stage, wildcards)
        current = pipeline.artifact_is_current(job)
        files = {**job.inputs, "code": list(spec.code), "external": planned_externals(spec)}
        files = {name: ancient(paths) if current else paths for name, paths in files.items()}
        return {**files, "stamp": stale_stamp(job, current)}

    return inputs


def stage_output(stage):
    return directory(pipeline.artifact(CFG, stage, "{experiment}"))


def stage_log(stage):
    spec = pipeline.STAGES[stage]
    return pipeline.log_path(spec, "{experiment}" if spec.per_experiment else None)


def stage_command(stage):
    """The job's command, exactly as the plan (and dvc.yaml) has it."""
    return lambda wildcards: _job(stage, wildcards).cmd


def stage_conda(stage):
    """The environment file that holds the job's backend (workflow_scripts/core/environments.py), per job: a generate
    job whose generator runs on vLLM gets envs/gpu-generation.yaml, its siblings on API models do not."""
    def conda_env(wildcards):
        return os.path.join(workflow.basedir, environments.conda_env(CFG, stage, wildcards.get("experiment")))

    return conda_env


def stage_threads(stage):
    return CFG.resources.for_stage(stage).cpus


def stage_resources(stage):
    """Snakemake resources of a stage's jobs; `gpu` becomes `sbatch --gpus=N` under the SLURM executor.
    Several nodes (pre-training): `sbatch --nodes=N --ntasks=N` with `--gres=gpu:G` per node, and the job's
    command starts its own `srun` (the `mpi` resource tells the plugin not to wrap it in one)."""
    r = CFG.resources.for_stage(stage)
    resources = {"mem_mb": r.mem_mb, "runtime": r.runtime, "nproc": r.nproc}
    if r.nodes > 1:
        # tasks_per_gpu=0: otherwise the plugin turns `tasks` into --ntasks-per-gpu for a GPU job
        resources.update(nodes=r.nodes, tasks=r.nodes, mpi="srun", tasks_per_gpu=0)
        if r.gpus:
            resources["gres"] = f"gpu:{r.gpus}"
    elif r.gpus:
        resources["gpu"] = r.gpus
    if stage in api_limits.API_STAGES:
        for provider in api_limits.api_providers(CFG):
            resources[provider] = api_requests_in_flight(stage, provider)
    return resources


def api_requests_in_flight(stage, provider):
    """`api_<provider>=N`: the requests a job keeps in flight at that provider (0 when it calls another one);
    a global `--resources api_<provider>=CAP` (profiles/) bounds their sum over concurrent jobs."""
    return lambda wildcards: api_limits.api_demand(CFG, stage, wildcards.get("experiment")).get(provider, 0)


def record_in_dvc_lock():
    """After a successful run: the jobs whose artifacts this run wrote go into dvc.lock (`dvc commit`),
    so that `dvc status` agrees with Snakemake without a manual step."""
    manifests = {job.name: Path(job.out, "manifest.json") for job in JOBS.values()}
    ran = [name for name, manifest in manifests.items() if manifest.is_file() and manifest.stat().st_mtime >= STARTED]
    if ran:  # this run validated the config as it planned: DVC's validate stage records that too
        validate.write_validated(Path(validate.validated_path(CFG)), CONFIG_FILE)
        ran = [dvc_yaml.VALIDATE, *ran]
    dvc_yaml.record_in_dvc_lock(ran, CONFIG_FILE)
