"""Evaluation stages: ``tasks`` builds local lm-eval tasks from held-out text; ``run`` evaluates a model."""

from __future__ import annotations

import argparse

from workflow_scripts.core.cli import add_common_arguments, run_main
from workflow_scripts.evaluate import run as run_stage
from workflow_scripts.evaluate import tasks as tasks_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflow_scripts.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    tasks = commands.add_parser(
        "tasks",
        help="build lm-eval task YAMLs + data from the held-out real corpus",
        description=tasks_stage.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(tasks)
    tasks_stage.add_arguments(tasks)
    tasks.set_defaults(body=tasks_stage.run)
    run = commands.add_parser(
        "run",
        help="evaluate one model (pre-trained or SFT) with lm-eval",
        description=run_stage.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(run, experiment=True)
    run_stage.add_arguments(run)
    run.set_defaults(body=run_stage.run)
    return run_main(lambda args: args.body(args), parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
