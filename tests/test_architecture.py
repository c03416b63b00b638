"""The layers of workflow_scripts (docs/architecture.md), read from the source with ast: imports only point down.

ground (core, config) <- llm client <- stages <- planner and front-ends. A stage reads another stage's artifact
only through that stage's ``reader`` module; no import cycles; every stage's code list covers what it runs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from workflow_scripts.core.stages import STAGES

PACKAGE = Path(__file__).resolve().parent.parent / "workflow_scripts"
ROOT = PACKAGE.parent
GROUND, LLM, STAGE, PLANNER = 0, 1, 2, 3
PLANNERS = {"workflow_scripts.pipeline", "workflow_scripts.dvc_yaml", "workflow_scripts.validate"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def resolve(name: str) -> str | None:
    """The module of ours an import names (``from pkg import sub`` names ``pkg.sub`` when it is a module)."""
    known = modules()
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


@cache
def imports(module: str) -> frozenset[str]:
    found = set()
    for node in ast.walk(ast.parse(modules()[module].read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("workflow_scripts") and (target := resolve(name)) and target != module:
                found.add(target)
    return frozenset(found)


PLANNER_PACKAGES = ("workflow_scripts.plan",)  # front-end packages: every module in them is a planner


def layer(module: str) -> int:
    if module in PLANNERS or any(module == p or module.startswith(p + ".") for p in PLANNER_PACKAGES):
        return PLANNER
    part = module.split(".")[1] if "." in module else ""
    return {"core": GROUND, "config": GROUND, "llm": LLM, "": GROUND}.get(part, STAGE)


def stage_of(module: str) -> str:
    return module.split(".")[1]


def test_imports_only_point_down_the_layers():
    upward = [f"{m} -> {t}" for m in modules() for t in imports(m) if layer(t) > layer(m)]
    assert upward == []


def test_a_stage_imports_another_stage_only_through_its_reader():
    crossing = [
        f"{m} -> {t}" for m in modules() for t in imports(m)
        if layer(m) == layer(t) == STAGE and stage_of(m) != stage_of(t) and not t.endswith(".reader")
    ]
    assert crossing == []


def test_no_import_cycles():
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(imports(module)):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(modules()):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_stage_imports_the_planner_and_core_imports_no_stage():
    assert [m for m in modules() if "workflow_scripts.pipeline" in imports(m) and layer(m) < PLANNER] == []
    assert [f"{m} -> {t}" for m in modules() if layer(m) == GROUND for t in imports(m) if layer(t) != GROUND] == []


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += imports(current)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stages_code_list_covers_every_module_it_runs(stage):
    row = STAGES[stage]
    entry = f"{row.module}.__main__" if f"{row.module}.__main__" in modules() else row.module
    code = [ROOT / path for path in row.code]
    uncovered = sorted(
        modules()[m].relative_to(ROOT).as_posix() for m in closure(entry)
        if layer(m) != GROUND and not any(modules()[m] == c or c in modules()[m].parents for c in code)
    )
    assert uncovered == [], f"{stage}: add these to its code list in core/stages.py"


def test_planning_imports_neither_torch_transformers_nor_polars():
    probe = (
        "import sys\n"
        "from workflow_scripts.config import load_config\n"
        "from workflow_scripts import pipeline\n"
        "pipeline.plan(load_config('params.yaml'))\n"
        "print(sorted(m for m in ('torch', 'transformers', 'polars') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
