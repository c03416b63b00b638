"""External inputs: the files a configuration points at outside ``data_root``.

Topic files, persona files, real-corpus files, instruction data and lm-eval task folders are checked when the
pipeline is planned (exists, not empty, parses), so that a missing or broken file stops Snakemake or DVC with
its key path and file named before any job runs or any output is touched. The checks read what a stage would
read first (topic and persona files whole: they are small; corpus and instruction files their first record or
their Parquet schema: they can be large); the stages still check every record they read.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Iterator

from workflow_scripts.config import CorpusSource, PipelineConfig
from workflow_scripts.core.artifacts import InputError

BUILTIN = "builtin"
PACKAGE = Path(__file__).resolve().parent.parent
HEAD_BYTES = 1 << 16  # what the checks read of a large file: enough for its first record
INSTRUCTION_SUFFIXES = (".json", ".jsonl", ".parquet")


def builtin_topics_file() -> Path:
    return PACKAGE / "resources" / "topics.json"


def builtin_personas_file() -> Path:
    return PACKAGE / "resources" / "personas.jsonl"


def topic_source_files(config: PipelineConfig) -> list[Path]:
    return [builtin_topics_file() if s == BUILTIN else Path(s) for s in config.topics.sources]


def personas_file(config: PipelineConfig) -> Path | None:
    """The configured persona file when it is not the shipped one (that one is part of generate's code)."""
    path = config.generate.prompts.personas_path
    return None if path == BUILTIN else Path(path)


def corpus_files(source: CorpusSource) -> list[Path]:
    return sorted({Path(f) for pattern in source.paths for f in glob.glob(pattern, recursive=True)})


def looks_local(path: str) -> bool:
    """Whether a path-or-hub-id is meant as a local path: a hub id is ``name`` or ``org/name``, nothing more."""
    return (path.startswith(("/", "./", "../", "~")) or path.count("/") > 1
            or Path(path).suffix in (*INSTRUCTION_SUFFIXES, ".txt", ".yaml", ".yml"))


def local_instruction_paths(config: PipelineConfig) -> list[Path]:
    """The SFT sources read from local files or folders (the others are hub datasets)."""
    return [Path(s.path) for s in config.sft.sources if s.path is not None and Path(s.path).exists()]


# --- formats ----------------------------------------------------------------------------------------------


def _json_payloads(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """A JSON document (line 1), or the JSON value on every non-blank line (JSONL)."""
    try:
        yield 1, json.loads(text)
        return
    except json.JSONDecodeError:
        pass
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not valid JSON ({error.msg})") from None


def read_topic_file(path: Path, allow_empty: bool = False) -> list[tuple[str, list[str]]]:
    """Records of a JSON object ``{path: [keywords]}`` or JSONL lines of such objects; at least one topic
    unless ``allow_empty`` (topics an LLM extracted may be none)."""
    if not path.is_file():
        raise InputError(f"topic file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    records = []
    for number, payload in _json_payloads(path, text):
        if not isinstance(payload, dict):
            raise InputError(f"{path}:{number}: expected an object {{\"Domain/.../topic\": [keywords]}}")
        for topic_path, keywords in payload.items():
            if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
                raise InputError(f"{path}:{number}: keywords of {topic_path!r} must be a list of strings")
            records.append((topic_path, keywords))
    if not records and not allow_empty:
        raise InputError(f"{path}: holds no topics (expected {{\"Domain/.../topic\": [keywords]}}, "
                         f"{'empty file' if not text.strip() else 'an empty object'} found)")
    return records


def read_personas(path: Path) -> list[str]:
    """The distinct personas of a JSONL file of ``{"persona": "..."}`` (whitespace normalised, in file order);
    :class:`InputError` naming the file and line when it is not one."""
    if not path.is_file():
        raise InputError(f"persona file {path} does not exist")
    personas: dict[str, None] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        persona = record.get("persona") if isinstance(record, dict) else None
        if not isinstance(persona, str) or not persona.strip():
            raise InputError(f"{path}:{number}: expected an object with a non-empty string 'persona'")
        personas[" ".join(persona.split())] = None
    if not personas:
        raise InputError(f"{path}: no personas found (expected JSONL lines of {{\"persona\": \"...\"}})")
    return list(personas)


def check_personas_file(path: Path) -> None:
    """A JSONL file of ``{"persona": "..."}`` with at least one persona (the generate stage reads it so)."""
    read_personas(path)


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(HEAD_BYTES)


def _first_json_record(path: Path) -> object:
    head = _head(path)
    first = next((line for line in head.splitlines() if line.strip()), b"")
    try:
        return json.loads(first)
    except ValueError:
        pass
    if len(head) < HEAD_BYTES:  # the whole file was read: a JSON document over several lines
        try:
            return json.loads(head)
        except ValueError as error:
            raise InputError(f"{path}: not valid JSON or JSONL ({error})") from None
    raise InputError(f"{path}: line 1 is not a JSON record")


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None


def check_corpus_file(path: Path, kind: str, text_field: str) -> None:
    """A real-corpus file: not empty, and its first record has ``text_field`` (jsonl, parquet) or is UTF-8."""
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    if kind == "parquet":
        columns = _parquet_columns(path)
        if text_field not in columns:
            raise InputError(f"{path}: no column {text_field!r} (columns: {columns})")
    elif kind == "jsonl":
        record = _first_json_record(path)
        if not isinstance(record, dict):
            raise InputError(f"{path}: line 1: not a JSON object")
        if text_field not in record:
            raise InputError(f"{path}: line 1 has no field {text_field!r} (fields: {list(record)})")
    else:
        try:
            _head(path).decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start < HEAD_BYTES - 4:  # not a character cut at the end of the head
                raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def check_instruction_path(path: Path) -> None:
    """Local SFT data: a .json/.jsonl/.parquet file, or a folder holding some; the first file's first record
    must parse (the SFT stage checks every record's fields)."""
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.suffix in INSTRUCTION_SUFFIXES and p.name != "manifest.json")
    if not files:
        raise InputError(f"{path}: no .json, .jsonl or .parquet files")
    for file in files:
        if file.suffix not in INSTRUCTION_SUFFIXES:
            raise InputError(f"{file}: unsupported file type (use .json, .jsonl or .parquet)")
        if file.stat().st_size == 0:
            raise InputError(f"{file}: empty file")
    first = files[0]
    if first.suffix == ".parquet":
        _parquet_columns(first)
    elif first.suffix == ".jsonl":
        if not isinstance(_first_json_record(first), dict):
            raise InputError(f"{first}: line 1: not a JSON object")
    elif first.stat().st_size <= 64 * HEAD_BYTES:
        try:
            data = json.loads(first.read_text(encoding="utf-8"))
        except ValueError as error:
            raise InputError(f"{first}: not valid JSON ({error})") from None
        if not isinstance(data, list):
            raise InputError(f"{first}: expected a JSON list of records, got {type(data).__name__}")


def check_task_folder(path: Path) -> None:
    if not path.is_dir():
        raise InputError(f"{path} is not a folder" if path.exists() else f"{path} does not exist")
    if not any(path.rglob("*.yaml")) and not any(path.rglob("*.yml")):
        raise InputError(f"{path}: no lm-eval task YAML files")


# --- the whole configuration ------------------------------------------------------------------------------


def external_input_problems(config: PipelineConfig) -> list[str]:
    """Every problem with the files the configuration names, each as ``key path: what is wrong``."""
    problems: list[str] = []

    def check(where: str, action, *args) -> None:
        try:
            action(*args)
        except (InputError, OSError) as error:
            problems.append(f"{where}: {error}")

    for index, file in enumerate(topic_source_files(config)):
        check(f"topics.sources.{index}", read_topic_file, file)
    personas = personas_file(config)
    if personas is not None:
        check("generate.prompts.personas_path", check_personas_file, personas)
    for index, source in enumerate(config.real_corpus.sources):
        if source.type not in ("jsonl", "parquet", "text"):
            continue
        where = f"real_corpus.sources.{index} ({source.name})"
        files = corpus_files(source)
        if not files:
            problems.append(f"{where}.paths: no file matches {source.paths}")
        for file in files:
            check(where, check_corpus_file, file, source.type, source.text_field)
    for index, source in enumerate(config.sft.sources):
        if source.path is None:
            continue
        where = f"sft.sources.{index}.path"
        if Path(source.path).exists():
            check(where, check_instruction_path, Path(source.path))
        elif looks_local(source.path):
            problems.append(f"{where}: {source.path} does not exist (and is no hub dataset id: org/name)")
    for index, folder in enumerate(config.evaluation.include_paths):
        check(f"evaluation.include_paths.{index}", check_task_folder, Path(folder))
    for name, experiment in config.experiments.items():
        external = experiment.external
        if external is None:
            continue
        where = f"experiments.{name}.external"
        files = sorted({Path(f) for pattern in external.paths for f in glob.glob(pattern, recursive=True)})
        if not files:
            problems.append(f"{where}.paths: no file matches {external.paths}")
        for file in files:
            check(where, check_corpus_file, file, external.type, external.text_field)
    return problems
