"""Snakemake and DVC run the same jobs: same commands, dependencies (code included) and outputs."""

from __future__ import annotations

import re

import pytest

from tests.project import REPO, copy_project, snakemake_job_specs
from workflow_scripts.config import load_config
from workflow_scripts.core.artifacts import MANIFEST
from workflow_scripts.dvc_yaml import VALIDATE, render
from workflow_scripts.pipeline import plan


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"))


def test_committed_dvc_yaml_is_generated_from_the_plan():
    assert (REPO / "dvc.yaml").read_text() == render("params.yaml"), (
        "dvc.yaml drifted from workflow_scripts/pipeline.py: run `python -m workflow_scripts.dvc_yaml`"
    )


def test_snakemake_jobs_match_dvc_stages(project):
    import yaml

    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    # DVC's first stage validates the config (Snakemake does it while planning); the others depend on its file.
    validated = stages.pop(VALIDATE)["outs"][0]
    jobs = snakemake_job_specs(project)
    assert set(jobs) == set(stages)
    for name, stage in stages.items():
        job = jobs[name]
        assert job["shell"] == stage["cmd"], name
        assert [{job["output"]: {"persist": True}}] == stage["outs"], name
        snakemake_inputs = {i for i in job["inputs"] if not i.startswith(".snakemake/fingerprints/")}
        # DVC depends on an upstream artifact through its manifest (pipeline.dvc_deps), Snakemake on the folder
        dvc_inputs = {dep.removesuffix(f"/{MANIFEST}") for dep in stage["deps"]}
        assert snakemake_inputs == dvc_inputs - set(validated), name


def test_every_stage_depends_on_its_own_code():
    for job in plan(load_config(REPO / "params.yaml")):
        words = job.cmd.split(" -m ")[1].split()
        module = words[0].replace(".", "/")
        if (REPO / f"{module}.py").is_file():
            module_file = f"{module}.py"
        else:  # a package: its entry point, or the module its subcommand runs
            module_file = f"{module}/__main__.py"
        assert (REPO / module_file).is_file(), module_file
        covered = [dep for dep in job.deps if module_file == dep or module_file.startswith(dep + "/")
                   or dep.startswith(module + "/")]
        assert covered, job.name


def test_paper_config_renders_dvc_stages_reading_its_own_params():
    text = render("configs/paper.yaml")
    assert "configs/paper.yaml:" in text
    assert "--config configs/paper.yaml" in text
    assert "data/paper/topics/samples/t300k_g20" in text


def test_readme_rule_graph_is_current(project):
    from tests.project import run

    def lines(text: str) -> list[str]:  # Snakemake lists the edges in no fixed order
        return sorted(line.strip() for line in text.splitlines())

    current = run(project, "snakemake", "--rulegraph").stdout
    assert lines(current) == lines((REPO / "docs" / "rulegraph.dot").read_text()), (
        "docs/rulegraph.dot is out of date: run `bash scripts/rulegraph.sh`"
    )


def test_workflow_lints_clean(project):
    from tests.project import run

    result = run(project, "snakemake", "--lint")
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_stage_resources_from_the_config_reach_the_rules(project, tmp_path):
    """`resources.stages.<stage>` becomes the rule's threads and resources (gpu=N is what the SLURM executor
    turns into --gpus=N), and a multi-process pre-training rule is launched through torchrun."""
    import yaml

    from tests.project import run

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["resources"]["stages"] = {"pretrain": {"cpus": 4, "gpus": 2, "nproc": 2, "mem_mb": 9000}}
    config = project / "gpu.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    output = run(project, "snakemake", "data/pretrain/real_only", "-n", "--forceall", "--cores", "8",
                 "--configfile", "gpu.yaml").stdout
    block = output[output.index("rule pretrain:"):]
    block = block[:block.index("Shell command:") + 400]
    assert "threads: 4" in block
    resources = re.search(r"resources: (.*)", block).group(1).split(", ")
    assert {"mem_mb=9000", "nproc=2", "gpu=2"} <= set(resources), block
    assert "torchrun --standalone --nnodes 1 --nproc_per_node 2 -m workflow_scripts.pretrain --config gpu.yaml" in block


def test_a_multi_node_pretrain_job_asks_slurm_for_nodes_and_starts_one_launcher_per_node(project):
    """resources.stages.pretrain.nodes > 1: the rule's resources become `sbatch --nodes=N --ntasks=N
    --gres=gpu:G` (per node), and the command starts one launcher per node with srun."""
    from types import SimpleNamespace

    import yaml
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the SLURM extra: bash scripts/install.sh --slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    from tests.project import run

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["resources"]["stages"] = {"pretrain": {"cpus": 4, "gpus": 2, "nproc": 2, "nodes": 3, "mem_mb": 9000}}
    (project / "nodes.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    output = run(project, "snakemake", "data/pretrain/real_only", "-n", "--forceall", "--cores", "8",
                 "--configfile", "nodes.yaml").stdout
    block = output[output.index("rule pretrain:"):]
    block = block[:block.index("Shell command:") + 400]
    assert ("srun --nodes 3 --ntasks-per-node 1 --kill-on-bad-exit=1 python -m workflow_scripts.pretrain.launch "
            "--nproc-per-node 2 -- -m workflow_scripts.pretrain --config nodes.yaml") in block, block
    resources = dict(item.split("=", 1) for item in re.search(r"resources: (.*)", block).group(1).split(", "))
    values = {k: int(v) if v.isdigit() else v for k, v in resources.items()}

    class Resources(SimpleNamespace):
        def get(self, key, default=None):
            return getattr(self, key, default)

    job = SimpleNamespace(resources=Resources(**values), threads=4)
    sbatch = get_submit_command(job, {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "",
                                      "partition": "", "workdir": None})
    assert {"--nodes=3", "--ntasks=3", "--cpus-per-task=4"} <= set(sbatch.split()), sbatch
    assert "--ntasks-per-gpu" not in sbatch and "--gres=gpu:2" in set_gres_string(job).split()
