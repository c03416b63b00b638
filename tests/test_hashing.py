"""Content hashes and the stat cache that spares re-reading unchanged files."""

from __future__ import annotations


def test_the_stat_cache_reads_a_file_again_only_when_it_changes(tmp_path, monkeypatch):
    from workflow_scripts.core import hashing

    monkeypatch.setattr(hashing, "STAT_CACHE", tmp_path / "cache.json")
    monkeypatch.setattr(hashing, "_stat_hashes", None)
    reads = []
    real = hashing.hash_file
    monkeypatch.setattr(hashing, "hash_file", lambda path: reads.append(path) or real(path))
    file = tmp_path / "corpus.txt"
    file.write_text("one")
    first = hashing.hash_path_cached(tmp_path / "corpus.txt")
    assert hashing.hash_path_cached(file) == first == real(file) and len(reads) == 1
    hashing.save_stat_cache()
    monkeypatch.setattr(hashing, "_stat_hashes", None)  # a new process: the cache comes from disk
    assert hashing.hash_path_cached(file) == first and len(reads) == 1
    file.write_text("two!")
    assert hashing.hash_path_cached(file) == real(file) != first and len(reads) == 2
