"""Topic extraction: pages -> topic path + keywords with structured output, through the request cache."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import yaml

from workflow_scripts.config.generate import Decoding, TopicExtractionConfig
from workflow_scripts.core.artifacts import JobIdentity, build_artifact, read_manifest, read_run_facts
from workflow_scripts.llm.types import LLMResponse
from workflow_scripts.topic_extraction import Page, extract_topics, main, normalise

PAGES = ["The Nile floods every summer and made farming possible along its banks.",
         "A lens bends light; its focal length depends on the curvature of its faces.",
         "Acids donate protons; the pH scale measures how acidic a solution is."]


class ScriptedBackend:
    def __init__(self, documents):
        self.documents = list(documents)
        self.requests = []

    def identity(self):
        return "fake:scripted@1"

    def generate(self, requests):
        self.requests.extend(requests)
        out = []
        for _ in requests:
            doc = self.documents.pop(0)
            out.append(LLMResponse(text=json.dumps(doc), parsed=doc) if doc is not None
                       else LLMResponse(text="{", finish_reason="error", error="invalid JSON"))
        return out


def test_extract_topics_merges_and_retries():
    backend = ScriptedBackend([
        # attempt 0: pages p1, p2, p3
        {"path": ["History", " Ancient Egypt ", "Nile floods"], "keywords": ["flood", "silt", "Flood"]},
        None,  # invalid answer for p2: retried with a new seed
        {"path": ["History", "Ancient Egypt", "Nile floods"], "keywords": ["irrigation", "silt"]},
        # attempt 1: p2 again
        {"path": ["Science", "Optics", "Lenses"], "keywords": ["focal length"]},
    ])
    pages = [Page("p1", PAGES[0]), Page("p2", PAGES[1]), Page("p3", PAGES[2])]
    result = extract_topics(pages, backend, TopicExtractionConfig(), global_seed=1, max_attempts=2)
    assert result.topics == {"History/Ancient Egypt/Nile floods": ["flood", "silt", "irrigation"],
                             "Science/Optics/Lenses": ["focal length"]}
    assert result.pages["status"].to_list() == ["ok", "ok", "ok"]
    assert result.counts["requests"] == 4 and result.counts["pages"] == 3
    seeds = [r.seed for r in backend.requests]
    assert len(set(seeds)) == 4  # every attempt has its own seed
    assert "Page:\n" + PAGES[0] in backend.requests[0].messages[-1]["content"]
    assert normalise({"path": ["Only"], "keywords": ["x"]}) is None


def test_topic_extraction_cli_with_tiny_model(tmp_path, tiny_llama_dir):
    import torch

    torch.set_num_threads(1)
    with build_artifact(tmp_path / "models", identity=JobIdentity(stage="local_models"), inputs={}) as art:
        shutil.copytree(tiny_llama_dir, art.path / "tiny")
    pages = tmp_path / "pages.jsonl"
    pages.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(PAGES)))
    raw = {
        "seed": 1,
        "models": {"tiny": {"local": "tiny"}},
        "local_models": {"models": {"tiny": {}}},
        "real_corpus": {"sources": [{"name": "d", "kind": "web", "type": "python_stdlib_docs"}],
                        "weights": {"web": 1}},
        "experiments": {"e": {"synthetic": {"topics": 1, "generations_per_topic": 1, "template": "topic",
                                            "generator": "tiny"}}},
        "generate": {
            "models": {"tiny": {"backend": {"device": "cpu"}}},
            "topic_extraction": {"max_depth": 3, "min_keywords": 2, "max_keywords": 3, "max_component_chars": 8,
                                 "max_keyword_chars": 8,
                                 "decoding": Decoding(temperature=1.0, max_new_tokens=200).model_dump()},
        },
    }
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(raw))
    args = ["--config", str(config), "--pages", str(pages), "--models", str(tmp_path / "models"),
            "--cache", str(tmp_path / "cache")]
    assert main(args + ["--out", str(tmp_path / "out")]) == 0
    topics = json.loads((tmp_path / "out" / "topics.json").read_text())
    assert topics and all(len(path.split("/")) >= 2 and 2 <= len(kws) for path, kws in topics.items())
    table = pl.read_parquet(tmp_path / "out" / "pages.parquet")
    assert table.height == 3 and set(table["status"]) <= {"ok", "failed"}
    manifest = read_manifest(tmp_path / "out", stage="topic_extraction")
    assert read_run_facts(tmp_path / "out")["backend_requests"] == manifest.counts["requests"]
    assert main(args + ["--out", str(tmp_path / "again")]) == 0
    assert read_manifest(tmp_path / "again", stage="topic_extraction").counts["requests"] == 3
    assert read_run_facts(tmp_path / "again")["backend_requests"] == 0
    assert json.loads((tmp_path / "again" / "topics.json").read_text()) == topics


def test_pages_need_text(tmp_path):
    from workflow_scripts.core.artifacts import InputError
    from workflow_scripts.topic_extraction import read_pages

    file = tmp_path / "pages.jsonl"
    file.write_text('{"title": "no text"}\n')
    with pytest.raises(InputError, match="text"):
        read_pages(file)
