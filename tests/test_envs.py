"""The conda environments (envs/*.yaml): files conda and pip accept, the project installed from the repository
root, and each job's rule naming the environment that holds its backend."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.project import REPO, environment
from workflow_scripts.config import load_config, parse_config
from workflow_scripts.core import environments
from workflow_scripts.core.stages import STAGES

ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
TE_PIN = "transformer-engine[pytorch]==2.11.0"


def pip_lines(env: dict) -> list[str]:
    return [line for dep in env["dependencies"] if isinstance(dep, dict) for line in dep.get("pip", [])]


# pip's own requirements-file parser, in a child process: pip imports the standard library's distutils, which
# would break setuptools' distutils shim for every later test of the session.
PIP_PARSER = """
import json, sys
from pip._internal.exceptions import RequirementsFileParseError
from pip._internal.network.session import PipSession
from pip._internal.req.constructors import install_req_from_parsed_requirement
from pip._internal.req.req_file import parse_requirements

try:
    parsed = list(parse_requirements(sys.argv[1], session=PipSession()))
    for requirement in parsed:
        install_req_from_parsed_requirement(requirement)  # raises on an invalid requirement string
except (RequirementsFileParseError, ValueError) as error:
    print("REFUSED " + json.dumps(f"{type(error).__name__}: {error}"))
else:
    print("PARSED " + json.dumps([[r.requirement, r.is_editable] for r in parsed]))
"""


class RefusedByPip(Exception):
    pass


def parse_with_pip(lines: list[str], tmp_path: Path) -> list[tuple[str, bool]]:
    """(requirement, editable) of each requirement line, as pip reads them: conda writes an environment's pip
    list into a requirements file and runs `pip install -r` on it, so each line must be a requirement or an
    option a requirements file allows. Raises RefusedByPip with pip's message otherwise."""
    requirements = tmp_path / "condaenv.requirements.txt"
    requirements.write_text("\n".join(lines) + "\n")
    result = subprocess.run([sys.executable, "-c", PIP_PARSER, str(requirements)], capture_output=True, text=True)
    verdict, _, payload = result.stdout.strip().rpartition("\n")[2].partition(" ")
    if verdict == "REFUSED":
        raise RefusedByPip(json.loads(payload))
    assert verdict == "PARSED", result.stdout + result.stderr
    return [(requirement, editable) for requirement, editable in json.loads(payload)]


def test_there_are_the_three_environments():
    assert {f.name for f in ENV_FILES} == {"cpu.yaml", "gpu-generation.yaml", "gpu-training.yaml"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda f: f.name)
def test_every_env_file_parses_and_every_pip_line_is_valid_for_pip(env_file, tmp_path):
    env = yaml.safe_load(env_file.read_text())
    assert isinstance(env, dict) and {"name", "channels", "dependencies"} <= set(env), env_file
    assert env["channels"] and env["dependencies"], env_file
    assert "pip" in env["dependencies"], f"{env_file.name}: conda installs the pip list only with pip itself"
    lines = pip_lines(env)
    assert lines, env_file
    parse_with_pip(lines, tmp_path)


def test_the_pip_check_refuses_options_on_a_requirement_line(tmp_path):
    """The line envs/gpu-generation.yaml used to have: pip refuses it, so the environment could not be made."""
    with pytest.raises(RefusedByPip, match="no such option: --no-deps"):
        parse_with_pip(["vllm==0.33.0", "-e .. --no-deps"], tmp_path)


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda f: f.name)
def test_no_pip_line_installs_a_local_path(env_file, tmp_path):
    """conda resolves a pip path against the directory of the file it is given, and Snakemake gives it a copy in
    .snakemake/conda/ (or --conda-prefix): `-e ..` would name that directory's parent, not the repository. The
    project is installed by the post-deploy script instead, from the working directory."""
    for requirement, editable in parse_with_pip(pip_lines(yaml.safe_load(env_file.read_text())), tmp_path):
        assert not editable, f"{env_file.name}: -e {requirement}"
        assert not re.match(r"^(\.|/|file:)", requirement), f"{env_file.name}: {requirement}"


def run_post_deploy(script: Path, cwd: Path, tmp_path: Path,
                    **variables: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The script as Snakemake runs it (bash, in the new environment, from the working directory), with a
    stand-in `python` that records its arguments instead of installing anything."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')
    (bin_dir / "python").chmod(0o755)
    env = environment(cwd) | {"PATH": f"{bin_dir}:/usr/bin:/bin"} | variables
    result = subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True)
    return result, calls.read_text().splitlines() if calls.is_file() else []


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda f: f.name)
def test_each_environment_installs_the_project_from_the_repository_root(env_file, tmp_path):
    script = env_file.with_suffix(".post-deploy.sh")  # the name Snakemake looks for next to the env file
    assert script.is_file(), script
    result, calls = run_post_deploy(script, REPO, tmp_path)
    assert result.returncode == 0, result.stderr
    installs = [call for call in calls if call.startswith("-m pip install")]
    project = [call for call in installs if call.endswith("-e .")]
    assert len(project) == 1, installs
    if env_file.name == "gpu-generation.yaml":  # the project's pins would replace vLLM's
        assert "--no-deps" in project[0].split(), project
    if env_file.name == "gpu-training.yaml":
        assert f"-m pip install --no-build-isolation {TE_PIN}" in installs, installs


def test_a_post_deploy_script_run_elsewhere_refuses_to_install(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result, calls = run_post_deploy(REPO / "envs" / "cpu.post-deploy.sh", elsewhere, tmp_path)
    assert result.returncode != 0 and not calls
    assert "run it from the repository root" in result.stderr


def test_transformer_engine_is_pinned_within_megatron_cores_tested_range():
    from importlib import metadata

    from packaging.requirements import Requirement

    pin = Requirement(TE_PIN)
    wanted = [Requirement(r) for r in metadata.requires("megatron-core") or []]
    te = [r for r in wanted if r.name == "transformer-engine"]
    assert te, "megatron-core no longer names transformer-engine: check the pin"
    assert any(r.specifier.contains(next(iter(pin.specifier)).version, prereleases=True) for r in te), te
    assert TE_PIN in (REPO / "envs" / "gpu-training.yaml").read_text()


def test_the_training_environment_can_be_made_without_transformer_engine_and_says_what_that_costs(tmp_path):
    result, calls = run_post_deploy(REPO / "envs" / "gpu-training.post-deploy.sh", REPO, tmp_path,
                                    SYNTHDIV_SKIP_TRANSFORMER_ENGINE="1")
    assert result.returncode == 0, result.stderr
    assert not [call for call in calls if "transformer-engine" in call], calls
    assert "local (unfused, slower) layer spec" in result.stderr


# --- which environment each job names ---------------------------------------------------------------------

# Parses the workflow (no DAG, nothing runs) and asks each rule's conda directive for every planned job.
PROBE = """
import json, os, sys
from pathlib import Path
os.environ["WORKFLOW_SCRIPTS_INPUT_CHECKS"] = "warn"  # the paper's input files are not in the repository
from snakemake.api import SnakemakeApi
from snakemake.iocontainers import Wildcards
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
from workflow_scripts.config import load_config
from workflow_scripts.pipeline import plan

config_file = sys.argv[1]
envs = {}
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=Path("Snakefile"), workdir=Path.cwd(),
                            config_settings=ConfigSettings(configfiles=[Path(config_file)]))._workflow
    rules = {rule.name: rule for rule in workflow.rules}
    for job in plan(load_config(config_file), config_file):
        wildcards = Wildcards(fromdict={"experiment": job.experiment} if job.experiment else {})
        spec = rules[job.stage].expand_conda_env(wildcards)
        envs[job.name] = None if spec is None else Path(str(spec.file)).relative_to(Path.cwd()).as_posix()
print("ENVS " + json.dumps(envs))
"""


def rule_environments(config_file: str) -> dict[str, str | None]:
    result = subprocess.run([sys.executable, "-c", PROBE, config_file], cwd=REPO, env=environment(REPO),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.split("ENVS ", 1)[1])


def test_every_stage_has_an_environment():
    assert set(environments.FIXED) | set(environments.LLM_MODELS) == set(STAGES)
    assert not set(environments.FIXED) & set(environments.LLM_MODELS)


def test_paper_rules_name_the_vllm_environment_for_vllm_generators_only():
    envs = rule_environments("configs/paper.yaml")
    config = load_config(REPO / "configs" / "paper.yaml")
    assert envs == {name: environments.conda_env(config, name.split("--")[0], (name.split("--") + [None])[1])
                    for name in envs}
    assert envs["generate--generator_llama"] == envs["generate--generator_mistral"] == environments.VLLM
    # API generators in jobs that ask for a GPU (resources.stages.generate): the CUDA environment, not vLLM's
    assert envs["generate--t100k_g10"] == envs["generate--generator_gpt35"] == environments.TRAINING
    # GPT-4 judges, GPT-2 scores perplexity on the job's GPU with transformers; the Llama-judge ablation on vLLM
    assert {envs[name] for name in envs if name.startswith("diversity--")
            and name != "diversity--ablation_judge_llama31"} == {environments.TRAINING}
    assert envs["diversity--ablation_judge_llama31"] == environments.VLLM
    assert envs["pretrain--real_only"] == envs["sft--real_only"] == environments.TRAINING
    assert envs["real_corpus"] == envs["report"] == environments.CPU


def test_default_rules_keep_every_llm_stage_in_the_cpu_environment():
    envs = rule_environments("params.yaml")
    llm_jobs = [name for name in envs if name.split("--")[0] in environments.LLM_MODELS]
    assert {name.split("--")[0] for name in llm_jobs} == {"topic_extraction", "generate", "diversity"}
    assert {envs[name] for name in llm_jobs} == {environments.CPU}
    assert {envs[name] for name in envs if name.startswith("pretrain--")} == {environments.TRAINING}


def test_a_vllm_model_moves_topic_extraction_generation_and_judging_to_the_vllm_environment():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["models"]["served"] = {"path": "org/model", "backend": "vllm"}
    raw["generate"]["topic_extraction"]["model"] = "served"
    raw["diversity"]["cluster_agent"]["judge"] = "served"
    experiment = next(name for name, spec in raw["experiments"].items() if spec.get("synthetic"))
    raw["experiments"][experiment]["synthetic"]["generator"] = "served"
    config = parse_config(raw)
    other = next(name for name in config.synthetic_experiments() if name != experiment)
    assert environments.conda_env(config, "topic_extraction") == environments.VLLM
    assert environments.conda_env(config, "generate", experiment) == environments.VLLM
    assert environments.conda_env(config, "generate", other) == environments.CPU
    assert environments.conda_env(config, "diversity", other) == environments.VLLM  # one judge for all
    assert environments.conda_env(config, "tokenize_real") == environments.CPU
