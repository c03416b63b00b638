"""The request cache: append-only shards, immutable packs, claims between concurrent jobs, DVC sharing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.project import REPO, run
from workflow_scripts.llm.cache import (CLAIMS, PACKS, SHARDS, CachedBackend, RequestCache, compact, main,
                                        request_key)
from workflow_scripts.llm.types import LLMRequest, LLMResponse



def _request(seed: int, text: str = "q") -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": text}], seed=seed)


def _records(seeds, identity="w"):
    return [(request_key(identity, _request(s)), identity, _request(s), LLMResponse(text=f"answer {s}"))
            for s in seeds]


class CountingBackend:
    def __init__(self):
        self.asked: list[int] = []

    def identity(self):
        return "fake:counting@1"

    def generate(self, requests):
        self.asked += [r.seed for r in requests]
        return [LLMResponse(text=f"answer {r.seed}") for r in requests]


def test_records_survive_reopen_and_a_torn_last_line_is_ignored(tmp_path):
    with RequestCache(tmp_path) as cache:
        assert cache.put_many(_records(range(10))) == 10
        assert cache.put_many(_records(range(5, 12))) == 2  # known keys are not written again
        shard = next((tmp_path / SHARDS).glob("*.jsonl"))
    with open(shard, "ab") as handle:  # a writer killed in the middle of a line
        handle.write(b'{"key":"' + b"a" * 64 + b'","identity":"w","requ')
    with RequestCache(tmp_path) as cache:
        assert len(cache) == 12
        found = cache.get_many(k for k, *_ in _records(range(12)))
        assert [found[k].text for k, *_ in _records(range(12))] == [f"answer {s}" for s in range(12)]
        assert "a" * 64 not in cache
    lines = shard.read_bytes().split(b"\n")
    assert all(json.loads(line)["key"] for line in lines[:-1])


def test_a_reader_sees_what_another_writer_appends_later(tmp_path):
    reader, writer = RequestCache(tmp_path), RequestCache(tmp_path)
    key = _records([1])[0][0]
    assert reader.get_many([key]) == {}
    writer.put_many(_records([1]))
    assert reader.get_many([key])[key].text == "answer 1"
    reader.close(), writer.close()


def test_compact_merges_shards_into_one_sorted_content_addressed_pack(tmp_path):
    for part in range(3):  # three finished writers, overlapping records
        with RequestCache(tmp_path) as cache:
            cache.put_many(_records(range(part * 1000, part * 1000 + 1500)))
    result = compact(tmp_path)
    assert result["records"] == 3500 and result["shards_merged"] == 3
    assert not list((tmp_path / SHARDS).iterdir())
    [pack] = (tmp_path / PACKS).glob("*.jsonl")
    from workflow_scripts.core.hashing import hash_bytes

    assert pack.name == f"{hash_bytes(pack.read_bytes())}.jsonl"
    keys = [json.loads(line)["key"] for line in pack.read_text().splitlines()]
    assert keys == sorted(set(keys))
    with RequestCache(tmp_path) as cache:
        assert len(cache) == 3500
        wanted = _records([0, 1, 1499, 2999, 3499])
        found = cache.get_many(k for k, *_ in wanted)
        assert [found[k].text for k, *_ in wanted] == [r.text for *_, r in wanted]
        assert request_key("w", _request(5000)) not in cache
        assert cache.put_many(_records(range(3400, 3600))) == 100  # packed ones are skipped
    second = compact(tmp_path)
    assert second["records"] == 100 and len(list((tmp_path / PACKS).glob("*.jsonl"))) == 2
    assert (tmp_path / PACKS / pack.name).read_bytes() == pack.read_bytes()  # existing packs never change
    assert compact(tmp_path)["pack"] is None
    merged = compact(tmp_path, repack=True)
    assert merged["records"] == 3600 and len(list((tmp_path / PACKS).glob("*.jsonl"))) == 1
    with RequestCache(tmp_path) as cache:
        assert len(cache) == 3600 and cache.get_many([_records([3599])[0][0]])


def test_compact_leaves_the_shards_of_live_writers(tmp_path):
    with RequestCache(tmp_path) as cache:
        cache.put_many(_records(range(3)))  # this process is alive: its shard is in progress
        assert compact(tmp_path, min_idle_s=0)["shards_merged"] == 0
        assert len(cache) == 3


def test_an_old_sqlite_cache_is_imported_once(tmp_path):
    db = sqlite3.connect(tmp_path / "requests.sqlite3")
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, identity TEXT NOT NULL, request TEXT NOT NULL, "
               "response TEXT NOT NULL, created REAL NOT NULL) WITHOUT ROWID")
    for key, identity, request, response in _records(range(7), identity="fake:counting@1"):
        db.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?)",
                   (key, identity, json.dumps(request.payload()), json.dumps(response.to_dict()), 0.0))
    db.commit()
    db.close()
    backend = CountingBackend()
    with RequestCache(tmp_path) as cache:
        assert len(cache) == 7
    assert not (tmp_path / "requests.sqlite3").exists() and (tmp_path / "requests.sqlite3.imported").exists()
    with RequestCache(tmp_path) as cache:
        answers = CachedBackend(backend, cache).generate([_request(s) for s in range(7)])
        assert backend.asked == [] and answers[3].text == "answer 3" and len(cache) == 7


def test_a_claim_of_a_dead_or_silent_owner_is_taken_over(tmp_path):
    key = request_key("w", _request(1))
    with RequestCache(tmp_path, stale_after_s=60) as cache:
        claim = tmp_path / CLAIMS / key[:2] / key
        claim.parent.mkdir(parents=True, exist_ok=True)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        claim.write_text(json.dumps({"host": cache.host, "pid": int(dead), "token": "x"}))
        assert cache.try_claim(key)  # its pid is gone on this host
        cache.release(key)
        assert not claim.exists()
        claim.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}))
        assert not cache.try_claim(key) and cache.claim_is_live(key)
        os.utime(claim, (time.time() - 120, time.time() - 120))  # no heartbeat for 2 minutes
        assert cache.try_claim(key)


def test_claims_are_held_with_a_heartbeat_and_released(tmp_path):
    with RequestCache(tmp_path, heartbeat_s=0.05) as cache:
        key = request_key("w", _request(1))
        assert cache.try_claim(key)
        claim = tmp_path / CLAIMS / key[:2] / key
        os.utime(claim, (0, 0))
        time.sleep(0.3)
        assert time.time() - claim.stat().st_mtime < 5
        other = RequestCache(tmp_path)
        assert not other.try_claim(key)
        cache.release(key)
        assert other.try_claim(key)
        other.close()


_RACER = textwrap.dedent("""
    import json, sys, time
    from workflow_scripts.llm.cache import CachedBackend, RequestCache
    from workflow_scripts.llm.types import LLMRequest, LLMResponse

    class Slow:
        def identity(self):
            return "fake:slow@1"
        def generate_as_completed(self, requests):
            for index, request in enumerate(requests):
                time.sleep(0.002)
                with open(sys.argv[2], "a") as log:
                    log.write(f"{request.seed}\\n")
                yield index, LLMResponse(text=f"answer {request.seed}")

    seeds = json.loads(sys.argv[3])
    cached = CachedBackend(Slow(), RequestCache(sys.argv[1]), poll_max_s=0.05)
    while open(sys.argv[4]).read() != "go":
        time.sleep(0.001)
    answers = []
    for start in range(0, len(seeds), 25):
        batch = [LLMRequest(messages=[{"role": "user", "content": "q"}], seed=s) for s in seeds[start:start + 25]]
        answers += cached.generate(batch)
    assert [a.text for a in answers] == [f"answer {s}" for s in seeds]
    print(json.dumps({"asked": cached.backend_requests, "hits": cached.hits}))
""")


def test_two_processes_racing_on_the_same_keys_ask_each_once(tmp_path):
    log, start = tmp_path / "asked.log", tmp_path / "start"
    start.write_text("wait")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seeds = [list(range(200)), list(range(100, 300))[::-1]]  # 100 shared, met from both ends
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path / "cache"), str(log), json.dumps(s),
                               str(start)], env=env, stdout=subprocess.PIPE, text=True) for s in seeds]
    time.sleep(1.0)
    start.write_text("go")
    reports = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    asked = [int(line) for line in log.read_text().split()]
    assert sorted(asked) == list(range(300))  # every distinct request exactly once
    assert sum(r["asked"] for r in reports) == 300 and sum(r["hits"] for r in reports) == 100
    assert not [p for p in (tmp_path / "cache" / CLAIMS).rglob("*") if p.is_file()]


def test_a_job_waits_for_the_answer_to_a_request_another_job_is_asking(tmp_path):
    import threading

    owner, waiter = RequestCache(tmp_path), RequestCache(tmp_path)
    [record] = _records([7], identity="fake:counting@1")
    assert owner.try_claim(record[0])
    backend = CountingBackend()
    cached = CachedBackend(backend, waiter, poll_max_s=0.05)
    result = []
    thread = threading.Thread(target=lambda: result.extend(cached.generate([_request(7)])))
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and backend.asked == []  # it waits instead of paying again
    owner.put_many([record])
    owner.release(record[0])
    thread.join(10)
    assert result[0].text == "answer 7" and backend.asked == [] and cached.shared_waits == 1 and cached.hits == 1
    # an owner that gives up (a transient failure) releases the claim without an answer: the waiter asks
    [other] = _records([8], identity="fake:counting@1")
    assert owner.try_claim(other[0])
    thread = threading.Thread(target=lambda: result.extend(cached.generate([_request(8)])))
    thread.start()
    time.sleep(0.2)
    owner.release(other[0])
    thread.join(10)
    assert result[1].text == "answer 8" and backend.asked == [8]
    owner.close(), waiter.close()


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "compact" in capsys.readouterr().out
    with RequestCache(tmp_path) as cache:
        cache.put_many(_records(range(4)))
    assert main(["stats", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 4
    with pytest.raises(SystemExit):
        main(["stats", str(tmp_path / "missing")])
    assert "no such cache directory" in capsys.readouterr().err


def _git_dvc(project: Path, *args: str) -> None:
    run(project, *args)


@pytest.mark.slow
def test_packs_travel_through_a_dvc_remote(tmp_path):
    """Push the packed cache from one project copy, pull it into a clone: the rerun there sends nothing."""
    from tests.project import copy_project

    remote, second = tmp_path / "remote", tmp_path / "second"
    remote.mkdir()
    first = copy_project(tmp_path / "first")
    _git_dvc(first, "dvc", "remote", "add", "-d", "shared", str(remote))
    cache_dir = first / "data" / "llm_cache"
    paying = CountingBackend()
    requests = [_request(s) for s in range(40)]
    with RequestCache(cache_dir) as cache:
        CachedBackend(paying, cache).generate(requests)
    assert len(paying.asked) == 40
    assert compact(cache_dir)["records"] == 40  # the writer above is closed: its shard is merged
    _git_dvc(first, "dvc", "add", "-q", "data/llm_cache/packs")  # the project's .gitignore lets packs.dvc in
    _git_dvc(first, "git", "add", "data/llm_cache/packs.dvc", ".dvc/config")
    _git_dvc(first, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "paid answers")
    _git_dvc(first, "dvc", "push", "-q", "data/llm_cache/packs.dvc")
    _git_dvc(tmp_path, "git", "clone", "-q", str(first), str(second))
    _git_dvc(second, "dvc", "pull", "-q", "data/llm_cache/packs.dvc")
    rerun = CountingBackend()
    with RequestCache(second / "data" / "llm_cache") as cache:
        answers = CachedBackend(rerun, cache).generate(requests)
    assert rerun.asked == [] and [a.text for a in answers] == [f"answer {s}" for s in range(40)]
