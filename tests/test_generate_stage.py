"""Generation stage end to end with the tiny model: outputs, cache reuse, G=20 over G=10, failures,
SIGKILL resume, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import polars as pl
import pytest
import yaml

from workflow_scripts.core.artifacts import JobIdentity, build_artifact, read_manifest, read_run_facts
from workflow_scripts.generate.stage import run_stage, split_config
from workflow_scripts.generate.templates import document_schema
from workflow_scripts.llm.cache import RequestCache
from workflow_scripts.llm.types import LLMResponse

REPO = Path(__file__).resolve().parents[1]
TINY_SCHEMA = {"min_passages": 3, "max_passages": 3, "max_nuance_chars": 6, "max_passage_chars": 14,
               "max_question_chars": 10, "max_option_chars": 5, "max_explanation_chars": 10}
PATHS = ["Science/Physics/Optics", "Science/Biology/Cells", "History/Rome/Roads", "Science/Chemistry/Acids",
         "Arts/Music/Rhythm", "History/Egypt/Nile", "Science/Geology/Rocks", "Arts/Painting/Colour"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_llama_dir):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("generate")
    with build_artifact(root / "models", identity=JobIdentity(stage="local_models"), inputs={}) as art:
        shutil.copytree(tiny_llama_dir, art.path / "tiny")
    with build_artifact(root / "topics", identity=JobIdentity(stage="topic_sample"), inputs={}) as art:
        pl.DataFrame({
            "topic_id": [f"t{i}" for i in range(len(PATHS))], "path": PATHS,
            "keywords": [[p.split("/")[-1].lower(), "example"] for p in PATHS],
        }).write_parquet(art.path / "topics.parquet")
    (root / "personas.jsonl").write_text("".join(
        json.dumps({"persona": f"A reader who enjoys {x}"}) + "\n" for x in ("maps", "songs", "code", "tea", "boats")))
    return root


def raw_config(workdir: Path, *, topics=3, template="topic_styles_persona", max_new_tokens=300, **generate):
    experiments = {
        f"g{g}": {"synthetic": {"topics": topics, "generations_per_topic": g, "template": template,
                                "generator": "tiny"}}
        for g in (2, 4)
    }
    section = {
        "decoding": {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": max_new_tokens},
        "prompts": {"personas_path": str(workdir / "personas.jsonl"), "personas_per_prompt": 2},
        "json_schema": TINY_SCHEMA,
        "models": {"tiny": {"backend": {"device": "cpu", "batch_size": 8}}},
        "max_attempts": 2,
        "requests_per_batch": 8,
    }
    section.update(generate)
    return {
        "seed": 5,
        "models": {"tiny": {"local": "tiny"}},
        "local_models": {"models": {"tiny": {"hidden_size": 32, "intermediate_size": 64,
                                             "num_attention_heads": 4}}},
        "real_corpus": {"sources": [{"name": "docs", "kind": "web", "type": "python_stdlib_docs"}],
                        "weights": {"web": 1}},
        "experiments": experiments,
        "generate": section,
    }


def _run(workdir, raw, experiment, cache, out):
    config, generation = split_config(raw)
    run_stage(config, generation, experiment=experiment, topics_dir=workdir / "topics", cache_dir=cache,
              out=out, models_dir=workdir / "models", progress=False)
    return read_manifest(out, stage="generate")


def _rows(out: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted(out.glob("generations-*.parquet"))])


def test_generate_cache_rerun_and_g20_reuses_g10(workdir, tmp_path):
    raw = raw_config(workdir, plan_chunk_size=4, rows_per_shard=4)  # several chunks and shards
    cache = tmp_path / "cache"
    first = _run(workdir, raw, "g2", cache, tmp_path / "g2")
    rows = _rows(tmp_path / "g2")
    assert first.info["shards"] == ["generations-00000.parquet", "generations-00001.parquet"]
    assert rows.height == 6 and first.counts["generations"] == 6 and first.counts["failures"] == 0
    assert rows["generation_id"].n_unique() == 6
    ran = read_run_facts(tmp_path / "g2")  # what this run asked the backend: the sidecar, not the manifest
    assert ran["backend_requests"] == first.counts["requests"] and ran["cache_hits"] == 0
    assert "cache_hits" not in first.counts and "backend_requests" not in first.counts
    assert first.counts["completion_tokens"] > 0 and "backend_seconds" not in first.counts  # timings: sidecar
    assert read_run_facts(tmp_path / "g2")["backend_output_tokens_per_s"] > 0
    assert {"seed", "experiments.g2.synthetic", "models.tiny", "generate.render"} <= set(first.params)
    schema = document_schema(split_config(raw)[1].json_schema, 2)
    for record in rows.iter_rows(named=True):
        document = json.loads(record["raw_json"])
        jsonschema.validate(document, schema)  # schema-valid JSON from the random model
        assert record["text"].startswith(document["passages"][0]["passage"].strip())
        assert record["template"] == "topic_styles_persona" and record["style"] and len(record["personas"]) == 2
        assert record["persona"] in record["personas"] and record["finish_reason"] == "stop"
        assert record["model"] == "tiny" and record["model_identity"].startswith("transformers:dir-")

    # downstream-only change (rendering): zero LLM calls, the model is not even loaded, same JSON
    changed = raw_config(workdir, render={"explanation_drop_probability": 1.0})
    rerun = _run(workdir, changed, "g2", cache, tmp_path / "g2-rerun")
    ran = read_run_facts(tmp_path / "g2-rerun")
    assert ran["backend_requests"] == 0 and ran["cache_hits"] == rerun.counts["requests"] == 6
    assert ran["backend_loaded"] is False
    again = _rows(tmp_path / "g2-rerun")
    assert again["raw_json"].to_list() == rows["raw_json"].to_list()
    assert again["text"].to_list() != rows["text"].to_list()

    # G=4 reuses the 6 requests of G=2 (same topics, generations 0 and 1) and asks only for the new ones
    bigger = _run(workdir, raw, "g4", cache, tmp_path / "g4")
    ran = read_run_facts(tmp_path / "g4")
    assert ran["cache_hits"] == 6 and ran["backend_requests"] == 6 and bigger.counts["requests"] == 12
    rows4 = _rows(tmp_path / "g4")
    shared = rows4.filter(pl.col("generation_index") < 2).sort("generation_id")
    assert shared["raw_json"].to_list() == rows.sort("generation_id")["raw_json"].to_list()
    assert shared["text"].to_list() == rows.sort("generation_id")["text"].to_list()
    with RequestCache(cache) as store:
        assert len(store) == 12


def test_failures_are_retried_then_recorded(workdir, tmp_path):
    raw = raw_config(workdir, topics=2, max_new_tokens=8, max_attempts=3)  # far too short: always truncated
    manifest = _run(workdir, raw, "g2", tmp_path / "cache", tmp_path / "out")
    failures = pl.read_parquet(tmp_path / "out" / "failures.parquet")
    assert manifest.counts["generations"] == 0 and manifest.counts["failures"] == 4 == failures.height
    assert manifest.counts["requests"] == 12 and manifest.counts["retries"] == 8
    assert failures["attempts"].to_list() == [3] * 4
    assert all("truncated" in r for r in failures["reason"])
    assert all(len(r) == 3 for r in failures["reasons"])
    assert _rows(tmp_path / "out").height == 0
    # retries use new seeds, so a rerun is answered from the cache too
    rerun = _run(workdir, raw, "g2", tmp_path / "cache", tmp_path / "out2")
    assert read_run_facts(tmp_path / "out2")["backend_requests"] == 0 and rerun.counts["failures"] == 4


class FlakyBackend:
    """Answers everything but one request with a transient error (an endpoint that is down)."""

    def __init__(self, identity):
        self._identity = identity

    def identity(self):
        return self._identity

    def generate(self, requests):
        return [LLMResponse(text="", finish_reason="error", error="HTTP 503", transient=True) for _ in requests]


def test_transient_errors_abort_without_publishing(workdir, tmp_path):
    from workflow_scripts.generate.stage import GenerationError

    raw = raw_config(workdir, topics=1)
    config, generation = split_config(raw)
    with pytest.raises(GenerationError, match="transient"):
        run_stage(config, generation, experiment="g2", topics_dir=workdir / "topics", cache_dir=tmp_path / "c",
                  out=tmp_path / "out", models_dir=workdir / "models", backend=FlakyBackend("x"), progress=False)
    assert not (tmp_path / "out").exists()
    with RequestCache(tmp_path / "c") as store:
        assert len(store) == 0  # nothing transient is cached


def _cli(config_file: Path, workdir: Path, experiment: str, cache: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "workflow_scripts.generate", "--config", str(config_file),
            "--experiment", experiment, "--topics", str(workdir / "topics"), "--models", str(workdir / "models"),
            "--cache", str(cache), "--out", str(out), "--no-progress"]


def _cache_rows(cache: Path) -> int:
    """Complete records in the cache's shards, read without opening the cache (a job is writing them)."""
    return sum(shard.read_bytes().count(b"\n") for shard in (cache / "shards").glob("*.jsonl"))


@pytest.mark.slow
def test_sigkilled_run_resumes_without_loss_or_duplicates(workdir, tmp_path):
    raw = raw_config(workdir, topics=8, requests_per_batch=2,
                     models={"tiny": {"backend": {"device": "cpu", "batch_size": 2}}})
    config_file = tmp_path / "params.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(_cli(config_file, workdir, "g4", cache, out), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _cache_rows(cache) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _cache_rows(cache)
    assert 4 <= killed_at < 32 and not out.exists()  # part done, nothing published

    done = subprocess.run(_cli(config_file, workdir, "g4", cache, out), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = read_manifest(out, stage="generate")
    counts = {**manifest.counts, **read_run_facts(out)}
    # nothing committed before the kill is asked again; everything else is asked exactly once
    assert counts["cache_hits"] >= killed_at
    assert counts["backend_requests"] == counts["requests"] - counts["cache_hits"]
    rows = _rows(out)
    assert rows.height + counts["failures"] == 32 and rows["generation_id"].n_unique() == rows.height
    with RequestCache(cache) as store:
        assert len(store) == counts["requests"]  # one record per distinct request: no duplicates
        stored = store.get_many(rows["request_key"].to_list())
    assert all(json.loads(r["raw_json"]) == stored[r["request_key"]].parsed for r in rows.iter_rows(named=True))
    assert not list(tmp_path.glob(".tmp-*"))


def test_cli_reports_bad_input_clearly(workdir, tmp_path):
    raw = raw_config(workdir, topics=50)  # more topics than the sample holds
    config_file = tmp_path / "params.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    from workflow_scripts.generate.stage import main

    assert main(["--config", str(config_file), "--experiment", "g2", "--topics", str(workdir / "topics"),
                 "--models", str(workdir / "models"), "--cache", str(tmp_path / "c"),
                 "--out", str(tmp_path / "o")]) == 2
    raw["generate"]["decoding"]["temperature"] = -1
    config_file.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(config_file), "--experiment", "g2", "--topics", str(workdir / "topics"),
                 "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 2


def test_stage_through_an_openai_compatible_endpoint(workdir, tmp_path, tiny_llama_dir):
    """The same stage with the HTTP backend, against our loopback server serving the tiny model."""
    from workflow_scripts.config import ModelSpec
    from workflow_scripts.config.generate import BackendOptions
    from workflow_scripts.llm.loader import load_backend
    from workflow_scripts.llm.server import ChatServer

    hf = load_backend(ModelSpec(path=str(tiny_llama_dir)), options=BackendOptions(device="cpu", batch_size=8))
    server = ChatServer(hf, port=0, model_name="tiny-served", batch_size=8, fail_first=2, fail_status=429)
    server.start()
    try:
        raw = raw_config(workdir, topics=2, template="topic_styles",
                         models={"served": {"backend": {"base_url": server.base_url, "api_key_env": None,
                                                        "max_concurrency": 4, "backoff_initial_s": 0.01}}})
        raw["models"]["served"] = {"path": "tiny-served", "revision": "test", "backend": "openai"}
        for spec in raw["experiments"].values():
            spec["synthetic"]["generator"] = "served"
        config, generation = split_config(raw)
        run_stage(config, generation, experiment="g2", topics_dir=workdir / "topics", cache_dir=tmp_path / "c",
                  out=tmp_path / "out", models_dir=None, progress=False)
    finally:
        server.stop()
    manifest = read_manifest(tmp_path / "out", stage="generate")
    assert manifest.counts["generations"] == 4 and read_run_facts(tmp_path / "out")["backend_requests"] == 4
    assert server.completion_calls == 4 + 2  # two injected 429s were retried
    rows = _rows(tmp_path / "out")
    assert set(rows["model_identity"]) == {"openai:tiny-served@test"}
    assert all(json.loads(r)["answer"] in "ABCD" for r in rows["raw_json"])
