"""Topic extraction (the paper's topic source): pages of text -> an LLM names a topic path and keywords.

Each page is cut to ``max_page_chars`` and sent with a bounded JSON schema asking for a hierarchical
path (``["Domain", "Subdomain", ..., "specific topic"]``, 2..max_depth parts) and min..max keywords.
Answers go through the shared request cache like every other LLM call. The result is a topics file in
the shipped format ``{"Domain/Subdomain/leaf": ["keyword", ...]}`` (same-path pages merged, keyword order
kept), which the topics stage merges with and deduplicates against the shipped topics.

    python -m workflow_scripts.topic_extraction --config params.yaml --pages PAGES \\
        --cache data/llm_cache [--models data/local_models] --out data/extracted_topics

PAGES: a .parquet/.jsonl/.json file or a directory of .parquet/.jsonl files (e.g. a real_corpus
artifact), with a ``text`` column (and optionally ``id``).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from workflow_scripts.config.generate import TopicExtractionConfig, extraction_model
from workflow_scripts.core.artifacts import InputError, build_artifact
from workflow_scripts.core.cli import load_checked_config, run_main, stage_parser
from workflow_scripts.core.hashing import hash_value
from workflow_scripts.core.identity import job_identity
from workflow_scripts.llm.cache import CachedBackend, RequestCache
from workflow_scripts.llm.loader import LazyBackend, batch_state_dir
from workflow_scripts.llm.form import prompt_layout
from workflow_scripts.llm.types import LLMBackend, LLMRequest

log = logging.getLogger(__name__)

STAGE = "topic_extraction"
SYSTEM_PROMPT = "You catalogue documents for an encyclopedia. Answer with one JSON object and nothing else."
_PROMPT = (
    "Read the page below and place its main subject in a topic hierarchy, from a broad domain down to the "
    "specific topic the page is about, as a list of {min_depth} to {max_depth} short names (\"path\"). Then "
    "list {min_kw} to {max_kw} keywords that capture the concepts, entities and terms a student of this "
    "topic should know (\"keywords\").\n"
    "Reply with JSON only, shaped like this: "
    "{{\"path\": [\"<domain>\", \"<subdomain>\", \"<topic>\"], \"keywords\": [\"<keyword>\", \"...\"]}}\n\n"
    "Page:\n{page}"
)


@dataclass(frozen=True)
class Page:
    page_id: str
    text: str


@dataclass
class ExtractionResult:
    topics: dict[str, list[str]]
    pages: pl.DataFrame  # page_id, path, keywords, status, reason
    counts: dict[str, int]


def extraction_schema(config: TopicExtractionConfig) -> dict[str, Any]:
    component = {"type": "string", "pattern": f'^[^"\\\\/\\x00-\\x1f]{{1,{config.max_component_chars}}}$'}
    keyword = {"type": "string", "pattern": f'^[^"\\\\\\x00-\\x1f]{{1,{config.max_keyword_chars}}}$'}
    return {
        "type": "object",
        "properties": {
            # titles name the lines of the form layout (structured_output: form)
            "path": {"type": "array", "minItems": 2, "maxItems": config.max_depth,
                     "items": {**component, "title": "Subject {n}"}},
            "keywords": {"type": "array", "minItems": config.min_keywords, "maxItems": config.max_keywords,
                         "items": {**keyword, "title": "Keyword {n}"}},
        },
        "required": ["path", "keywords"],
        "additionalProperties": False,
    }


FORM_SYSTEM_PROMPT = "You catalogue documents for an encyclopedia. You fill in forms line by line."
_FORM_PROMPT = (
    "Page:\n<<<\n{page}\n>>>\n\n"
    "Which subject is this page about? Name it in a few words, from the broad field down to the exact topic, "
    "then list keywords a student of the topic should know."
)


def _messages(page: "Page", config: TopicExtractionConfig, layout: str) -> list[dict[str, str]]:
    text = page.text[:config.max_page_chars]
    if layout == "form":
        return [{"role": "system", "content": FORM_SYSTEM_PROMPT},
                {"role": "user", "content": _FORM_PROMPT.format(page=text)}]
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": _PROMPT.format(min_depth=2, max_depth=config.max_depth,
                                                       min_kw=config.min_keywords, max_kw=config.max_keywords,
                                                       page=text)}]


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def normalise(document: dict[str, Any]) -> tuple[str, list[str]] | None:
    parts = [_clean(p).strip(" /'\"") for p in document.get("path", [])]
    parts = [p for p in parts if p]
    keywords: list[str] = []
    seen: set[str] = set()
    for keyword in document.get("keywords", []):
        keyword = _clean(keyword).strip("'\"")
        if keyword and keyword.lower() not in seen:
            seen.add(keyword.lower())
            keywords.append(keyword)
    if len(parts) < 2 or not keywords:
        return None
    return "/".join(parts), keywords


def extract_topics(pages: Sequence[Page], backend: LLMBackend, config: TopicExtractionConfig, *,
                   global_seed: int, max_attempts: int = 3, layout: str = "json") -> ExtractionResult:
    """Ask ``backend`` for a topic path + keywords per page (retrying bad answers with new seeds);
    ``layout`` "form" words the request for a backend that fills the schema as a form."""
    schema = extraction_schema(config)
    decoding = config.decoding
    results: dict[str, dict[str, Any]] = {}
    pending = list(pages)
    requests_sent = 0
    for attempt in range(max_attempts):
        if not pending:
            break
        requests = [LLMRequest(
            messages=_messages(page, config, layout),
            temperature=decoding.temperature, top_p=decoding.top_p, max_new_tokens=decoding.max_new_tokens,
            json_schema=schema, seed=int(hash_value([global_seed, "topic-extraction", page.page_id,
                                                      attempt])[:15], 16),
            repetition_penalty=decoding.repetition_penalty)
            for page in pending]
        requests_sent += len(requests)
        answers = backend.generate(requests)
        retry = []
        for page, answer in zip(pending, answers):
            if answer.transient:
                raise RuntimeError(f"page {page.page_id}: {answer.error} (answered pages are cached: rerun)")
            normalised = normalise(answer.parsed) if answer.parsed is not None else None
            reason = answer.error or (None if normalised else "empty path or keywords after cleaning")
            if normalised is not None and reason is None:
                results[page.page_id] = {"page_id": page.page_id, "path": normalised[0],
                                         "keywords": normalised[1], "status": "ok", "reason": None}
            elif attempt + 1 < max_attempts:
                retry.append(page)
            else:
                results[page.page_id] = {"page_id": page.page_id, "path": None, "keywords": None,
                                         "status": "failed", "reason": reason}
        pending = retry
    rows = [results[p.page_id] for p in pages if p.page_id in results]
    frame = pl.DataFrame(rows, schema={"page_id": pl.String, "path": pl.String, "keywords": pl.List(pl.String),
                                       "status": pl.String, "reason": pl.String})
    topics: dict[str, list[str]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        merged = topics.setdefault(row["path"], [])
        known = {k.lower() for k in merged}
        merged.extend(k for k in row["keywords"] if k.lower() not in known)
    counts = {"pages": len(pages), "requests": requests_sent, "topics": len(topics),
              "failed_pages": int((frame["status"] == "failed").sum())}
    return ExtractionResult(topics=topics, pages=frame, counts=counts)


def read_pages(path: Path, limit: int | None = None) -> list[Page]:
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl") and not p.name.startswith("."))
    if not files:
        raise InputError(f"{path}: no .parquet/.jsonl page files")
    pages: list[Page] = []
    for file in files:
        readers = {".parquet": pl.read_parquet, ".jsonl": pl.read_ndjson, ".json": pl.read_json}
        if file.suffix not in readers:
            raise InputError(f"{file}: pages must be .parquet, .jsonl or .json (a list of objects)")
        frame = readers[file.suffix](file)
        if "text" not in frame.columns:
            raise InputError(f"{file}: no 'text' column (has {frame.columns})")
        ids = frame["id"].cast(pl.String) if "id" in frame.columns else None
        for row, text in enumerate(frame["text"]):
            if not isinstance(text, str) or not text.strip():
                continue
            page_id = ids[row] if ids is not None else f"{file.stem}:{row}"
            pages.append(Page(page_id=str(page_id), text=text))
            if limit is not None and len(pages) >= limit:
                return pages
    return pages


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config)
    generation = config.generate
    extraction = generation.topic_extraction
    model = extraction_model(config)
    pages = read_pages(args.pages, extraction.max_pages)
    inputs: dict[str, Path] = {"pages": args.pages}
    spec = config.models[model]
    if spec.in_local_models and args.models is not None:
        inputs["models"] = args.models
    backend = LazyBackend(spec, args.models, generation.backend_for(model), state_dir=batch_state_dir(args.cache))
    identity = job_identity(config, STAGE, inputs=inputs)
    with RequestCache(args.cache) as cache, build_artifact(args.out, identity=identity, inputs=inputs) as artifact:
        cached = CachedBackend(backend, cache)
        layout = prompt_layout(generation.backend_for(model))
        result = extract_topics(pages, cached, extraction, global_seed=config.seed,
                                max_attempts=generation.max_attempts, layout=layout)
        (artifact.path / "topics.json").write_text(json.dumps(result.topics, indent=1, ensure_ascii=False) + "\n")
        result.pages.write_parquet(artifact.path / "pages.parquet")
        artifact.counts.update(result.counts)
        artifact.run.update(cache_hits=cached.hits, backend_requests=cached.backend_requests)
        artifact.info.update(model=model, model_identity=backend.identity())


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--pages", type=Path, required=True, help="page file or directory (text column)")
    parser.add_argument("--models", type=Path, default=None, help="local_models artifact (local extractor)")
    parser.add_argument("--cache", type=Path, required=True, help="shared request cache directory")
    return run_main(run, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
