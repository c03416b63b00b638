"""Structured output for small local models: a JSON schema as a line-by-line form.

A 135M-parameter model rarely writes a whole JSON document well, even under a grammar, but it fills
``Label: value`` lines readily. With ``structured_output: form`` the transformers backend writes the
schema's fixed parts itself (the labels, one per line) and lets the model write only the values: free
text up to the end of the line for strings, one of the listed choices for enums. The values are then
assembled into the JSON document the schema describes, and validated like any other answer.

:func:`form_fields` turns a schema into its fields, in document order; :func:`assemble` builds the document.
The prompts of form models do not show the form: a 135M model copies any placeholder it is shown.

Supported schemas: objects with fixed properties, arrays (``minItems`` items are asked for), strings
(bounded by ``maxLength`` or a ``{1,N}`` pattern), enums (of strings, integers or booleans) and booleans.
Labels come from each schema's ``title`` when it has one (``{n}`` and ``{letter}`` are replaced by the
item's number and letter), otherwise from the property name. An empty title adds no words to the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Literal

_PATTERN_BOUND = re.compile(r"\{(\d+),(\d+)\}\$?$")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def prompt_layout(options: Any) -> str:
    """How a request to a backend with these options is worded: "form" or "json"."""
    return "form" if getattr(options, "structured_output", "grammar") == "form" else "json"


class FormError(ValueError):
    """The schema uses something a form cannot express."""


@dataclass(frozen=True)
class FormField:
    label: str
    kind: Literal["text", "choice"]
    choices: tuple[Any, ...] = ()        # the JSON values of a choice field
    max_chars: int | None = None         # longest value a text field may hold
    hint: str = ""                       # what goes here (the schema's description)

    @property
    def choice_texts(self) -> tuple[str, ...]:
        return tuple(_as_text(c) for c in self.choices)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _humanize(name: str) -> str:
    return name.replace("_", " ").strip()


def _singular(label: str) -> str:
    return label[:-1] if len(label) > 3 and label.endswith("s") and not label.endswith("ss") else label


def _join(prefix: str, part: str) -> str:
    text = f"{prefix} {part}".strip()
    return text[:1].upper() + text[1:]


def _max_chars(schema: dict[str, Any]) -> int | None:
    bound = schema.get("maxLength")
    pattern = schema.get("pattern")
    if pattern:
        match = _PATTERN_BOUND.search(pattern)
        if match:
            bound = min(int(match.group(2)), bound or int(match.group(2)))
    return int(bound) if bound is not None else None


def _item_label(items: dict[str, Any], parent: str, number: int) -> str:
    title = items.get("title")
    if isinstance(title, str):
        if "{n}" in title or "{letter}" in title:
            return title.replace("{n}", str(number)).replace("{letter}", LETTERS[(number - 1) % 26])
        return f"{title} {number}".strip()
    return f"{_singular(parent)} {number}".strip()


def _count(schema: dict[str, Any]) -> int:
    low = int(schema.get("minItems", 1) or 1)
    high = schema.get("maxItems")
    return min(low, int(high)) if high is not None else low


def _walk(schema: dict[str, Any], label: str, where: str) -> Iterator[FormField]:
    if "enum" in schema:
        yield FormField(label, "choice", tuple(schema["enum"]), hint=schema.get("description", ""))
        return
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties") or {}
        if not properties:
            raise FormError(f"{where}: an object without properties cannot be a form")
        for name, child in properties.items():
            title = child.get("title")
            part = title if isinstance(title, str) else _humanize(name)
            yield from _walk(child, _join(label, part), f"{where}/{name}")
    elif kind == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            raise FormError(f"{where}: an array needs one 'items' schema")
        for number in range(1, _count(schema) + 1):
            yield from _walk(items, _join("", _item_label(items, label, number)), f"{where}/{number - 1}")
    elif kind == "string":
        yield FormField(label, "text", max_chars=_max_chars(schema), hint=schema.get("description", ""))
    elif kind == "boolean":
        yield FormField(label, "choice", (True, False), hint=schema.get("description", ""))
    else:
        raise FormError(f"{where}: type {kind!r} needs an enum to be a form field")


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    """The schema's fields in document order (labels unique: a duplicate is a schema the form misreads)."""
    fields = list(_walk(schema, "", "(root)"))
    labels = [f.label for f in fields]
    if len(set(labels)) != len(labels):
        duplicate = next(label for label in labels if labels.count(label) > 1)
        raise FormError(f"two fields of the form share the label {duplicate!r}: give the schema titles")
    return fields


def assemble(schema: dict[str, Any], values: list[Any]) -> Any:
    """The JSON document of ``schema`` whose fields (in :func:`form_fields` order) hold ``values``."""
    stream = iter(values)
    document = _build(schema, stream)
    if next(stream, None) is not None:
        raise FormError("more values than the form has fields")
    return document


def _build(schema: dict[str, Any], stream: Iterator[Any]) -> Any:
    if "enum" in schema or schema.get("type") in ("string", "boolean"):
        return next(stream)
    if schema.get("type") == "object":
        return {name: _build(child, stream) for name, child in schema["properties"].items()}
    return [_build(schema["items"], stream) for _ in range(_count(schema))]


def clean_text_value(text: str, max_chars: int | None) -> str:
    """A model's line as a schema-safe string: one line, no quotes or control characters, within bounds."""
    value = re.sub(r"[\x00-\x1f\\]", " ", text.split("\n", 1)[0]).replace('"', "'")
    value = " ".join(value.split()).strip("*")  # quotes or emphasis around a whole value are noise
    if value[:1] in ("'", "`"):  # a quote around the whole value, or an opening one never closed
        if len(value) > 1 and value[-1] == value[0]:
            value = value[1:-1]
        elif value.count(value[0]) == 1:
            value = value[1:]
    if max_chars is not None and len(value) > max_chars:
        cut = value[:max_chars]
        ends = [cut.rfind(mark) + 1 for mark in ".!?"]  # keep whole sentences when one ends late enough
        if max(ends) > max_chars // 2:
            value = cut[:max(ends)]
        else:
            value = cut[:cut.rfind(" ")] if " " in cut[max_chars // 2:] else cut
    return value.strip()
