"""What every stage's command line shares: --config, --experiment, --out, --log-file, logging set-up.

A stage module exposes ``main(argv=None) -> int`` and ends with::

    if __name__ == "__main__":
        raise SystemExit(main())
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from workflow_scripts.config import ConfigError, PipelineConfig, load_config
from workflow_scripts.core.artifacts import ArtifactError, InputError

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(log_file: Path | None = None, verbose: bool = False) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True
    )
    for noisy in ("httpx", "urllib3", "filelock", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stage_parser(description: str | None, *, experiment: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, experiment=experiment)
    return parser


def add_common_arguments(parser: argparse.ArgumentParser, *, experiment: bool = False) -> None:
    parser.add_argument("--config", type=Path, default=Path("params.yaml"),
                        help="pipeline configuration (default: params.yaml)")
    if experiment:
        parser.add_argument("--experiment", required=True, help="experiment name from the config's grid")
    parser.add_argument("--out", type=Path, required=True, help="artifact directory to create")
    parser.add_argument("--log-file", type=Path, default=None, help="also write the log to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def load_checked_config(path: Path, experiment: str | None = None) -> PipelineConfig:
    config = load_config(path)
    if experiment is not None and experiment not in config.experiments:
        raise ConfigError(
            f"{path}: experiment {experiment!r} is not in the grid (known: {sorted(config.experiments)})"
        )
    return config


class StageInterrupted(Exception):
    """The stage stopped early on purpose (a signal) after saving what it had; the same command resumes."""

    exit_code = 143  # 128 + SIGTERM, as if the signal had ended the process: schedulers treat it as a failure
    log_level = logging.WARNING


def run_main(body: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
             argv: Sequence[str] | None = None) -> int:
    """Parse arguments, set up logging and threads, run ``body``; turn known errors into one clear line."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_file", None), getattr(args, "verbose", False))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        body(args)
    except (ConfigError, ArtifactError, InputError, FileNotFoundError) as error:
        logging.getLogger(body.__module__).error("%s", error)
        return 2
    except StageInterrupted as error:
        logging.getLogger(body.__module__).log(error.log_level, "%s", error)
        return error.exit_code
    return 0
