"""Stage report: see workflow_scripts.report.build for inputs and outputs."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from workflow_scripts.core.cli import add_common_arguments, run_main
from workflow_scripts.report import build

LIST_OPTIONS = ("--evals", "--diversity", "--train-metrics", "--mixes")


class InputsParser(argparse.ArgumentParser):
    """Also accepts one option per input, ``--evals-<anything> PATH`` (as the pipeline's job commands write
    them, one named input each), folded into ``--evals PATH``; likewise --diversity-* / --train-metrics-*."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([fold(a) for a in args], namespace)


def fold(argument: str) -> str:
    for option in LIST_OPTIONS:
        if argument.startswith(option + "-") or argument.startswith(option + "_"):
            return option
    return argument


def main(argv: list[str] | None = None) -> int:
    parser = InputsParser(
        prog="python -m workflow_scripts.report",
        description=build.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    build.add_arguments(parser)
    return run_main(build.run, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
