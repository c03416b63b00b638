# Shared set-up: validate the configuration once, plan every job, and give the rules their fields.
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from workflow_scripts import pipeline
from workflow_scripts.core.config import load_config

# A --configfile on the command line replaces params.yaml entirely (its experiment grid is not merged
# into the default one); the stage commands receive that same file.
CONFIG_FILE = (
    Path(workflow.overwrite_configfiles[-1]).as_posix()
    if workflow.overwrite_configfiles
    else "params.yaml"
)
CFG = load_config(CONFIG_FILE)
JOBS = {job.name: job for job in pipeline.plan(CFG, CONFIG_FILE)}


wildcard_constraints:
    experiment="|".join(re.escape(name) for name in CFG.experiments),


def _job(stage, wildcards):
    experiment = wildcards.get("experiment")
    return JOBS[pipeline.job_name(stage, experiment)]


def fingerprint_stamp(job):
    """A file that is older than any output unless the job's artifact was built from another plan.

    Rebuild decisions come from fingerprints, not mtimes (inputs are ancient()). Snakemake compares
    the fingerprint param with its own metadata; that metadata is missing in a fresh clone after
    `dvc pull`, so the artifact's manifest (which records the fingerprint it was built with) is
    checked too: a stale artifact gets a stamp dated now, which makes Snakemake rerun the job.
    """
    stamp = Path(".snakemake", "fingerprints", f"{job.name}.txt")
    manifest = Path(job.out, "manifest.json")
    stale = manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") != job.fingerprint
    if not stamp.is_file() or stamp.read_text() != job.fingerprint:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(job.fingerprint)
    moment = time.time() if stale else 0
    os.utime(stamp, (moment, moment))
    return stamp.as_posix()


def stage_input(stage):
    spec = pipeline.STAGES[stage]

    def inputs(wildcards):
        job = _job(stage, wildcards)
        files = {**job.inputs, "code": list(spec.code), "external": list(spec.externals(CFG))}
        return {**{name: ancient(paths) for name, paths in files.items()}, "fingerprint": fingerprint_stamp(job)}

    return inputs


def stage_output(stage):
    return directory(pipeline.artifact(CFG, stage, "{experiment}"))


def stage_fingerprint(stage):
    return lambda wildcards: _job(stage, wildcards).fingerprint


def stage_log(stage):
    spec = pipeline.STAGES[stage]
    return pipeline.log_path(spec, "{experiment}" if spec.per_experiment else None)


def stage_shell(stage):
    spec = pipeline.STAGES[stage]
    names = spec.inputs(CFG, "{experiment}")
    return pipeline.command(
        spec, CONFIG_FILE, "{wildcards.experiment}",
        {name: f"{{input.{name}}}" for name in names}, "{output}", "{log}",
    )
