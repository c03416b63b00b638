"""Base types of the configuration schema, kept apart so stage config modules can import them
without importing the assembled schema (workflow_scripts.config imports those modules)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Names become parts of dotted DVC param keys (models.<name>): no dots.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=80)]
# Experiment names become Snakemake wildcards and DVC stage names (`stage--experiment`): no "--".
ExperimentName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*$", max_length=80)]


class Section(BaseModel):
    """A configuration section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
