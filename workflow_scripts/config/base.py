"""Base types of the configuration schema, kept apart so stage config modules can import them
without importing the assembled schema (workflow_scripts.config imports those modules)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_serializer

# Names become parts of dotted DVC param keys (models.<name>): no dots.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=80)]
# Experiment names become Snakemake wildcards and DVC stage names (`stage--experiment`): no "--".
ExperimentName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*$", max_length=80)]


class Section(BaseModel):
    """A configuration section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OmitsUnset(Section):
    """A section whose optional keys added after fingerprints existed are left out of its dump (and so of every
    fingerprint) while they are None: configurations that do not use them keep their identities."""

    omit_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if not (k in self.omit_when_none and v is None)}
