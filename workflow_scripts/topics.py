"""Stage: the topic catalog and the per-experiment topic samples.

``catalog``: read topic files in the paper's format (``{"Domain/Sub/.../leaf": ["keyword", ...]}``;
``builtin`` is the hierarchy shipped with this project) and, with ``--extracted``, the topics an LLM
extracted from real-corpus pages (the paper's method; ``topics.extract_from_corpus``), normalise paths and keywords, drop topics with
too few keywords, merge exact duplicates (same normalised path) and near duplicates (Jaccard similarity
of path-leaf + keyword tokens at or above ``topics.near_duplicate_threshold``, candidates found by
MinHash LSH so the paper's 620K topics stay tractable), and write ``topics.parquet`` + ``topics.json``.

``sample``: draw T topics for one experiment. Topics are ranked by a seeded hash of their id and the
first T are kept, so a 100-topic sample is always a subset of the 200-topic sample with the same seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from workflow_scripts.config import TopicsConfig
from workflow_scripts.core.artifacts import InputError, build_artifact, read_manifest
from workflow_scripts.core.cli import add_common_arguments, load_checked_config, run_main
from workflow_scripts.core.identity import job_identity
from workflow_scripts.core.inputs import read_topic_file

log = logging.getLogger(__name__)

BUILTIN = "builtin"
TOKEN = re.compile(r"[a-z0-9]+")
MINHASH_PERMUTATIONS = 32
LSH_BANDS = 16  # 16 bands x 2 rows: pairs with Jaccard >= 0.5 become candidates with high probability
PRIME = (1 << 31) - 1  # hashes and coefficients below 2^31 keep a*x+b inside uint64


@dataclass
class Topic:
    path: str
    keywords: list[str]
    sources: set[str] = field(default_factory=set)

    @property
    def key(self) -> str:
        return self.path.casefold()


def builtin_topics_file() -> Path:
    return Path(str(resources.files("workflow_scripts") / "resources" / "topics.json"))


def source_files(config: TopicsConfig) -> list[Path]:
    return [builtin_topics_file() if s == BUILTIN else Path(s) for s in config.sources]


# --- reading ----------------------------------------------------------------------------------------------


def normalise_path(path: str) -> str:
    parts = [" ".join(part.split()) for part in path.split("/")]
    return "/".join(part for part in parts if part)


def normalise_keywords(keywords: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for keyword in keywords:
        cleaned = " ".join(keyword.split()).lower()
        if cleaned:
            seen.setdefault(cleaned, None)
    return list(seen)


# --- deduplication ----------------------------------------------------------------------------------------


def topic_tokens(topic: Topic) -> set[str]:
    leaf = topic.path.rsplit("/", 1)[-1].lower()
    return set(TOKEN.findall(leaf)) | {t for k in topic.keywords for t in TOKEN.findall(k)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _stable_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little") % PRIME


def minhash_signatures(token_sets: list[set[str]]) -> np.ndarray:
    """MinHash signatures (one row per set), vectorised over all tokens of all sets at once."""
    rng = np.random.default_rng(0)
    a = rng.integers(1, PRIME, MINHASH_PERMUTATIONS, dtype=np.uint64)
    b = rng.integers(0, PRIME, MINHASH_PERMUTATIONS, dtype=np.uint64)
    per_set = [sorted(tokens) or [""] for tokens in token_sets]
    hashes = np.array([_stable_hash(t) for tokens in per_set for t in tokens], dtype=np.uint64)
    offsets = np.cumsum([0] + [len(tokens) for tokens in per_set[:-1]])
    signatures = np.empty((len(token_sets), MINHASH_PERMUTATIONS), dtype=np.uint64)
    for column in range(MINHASH_PERMUTATIONS):
        values = (a[column] * hashes + b[column]) % PRIME  # < 2^62: no overflow in uint64
        signatures[:, column] = np.minimum.reduceat(values, offsets)
    return signatures


def near_duplicate_groups(topics: list[Topic], threshold: float) -> list[int]:
    """For each topic, the index of the topic it merges into (itself if it is kept)."""
    token_sets = [topic_tokens(t) for t in topics]
    signatures = minhash_signatures(token_sets)
    rows = MINHASH_PERMUTATIONS // LSH_BANDS
    parent = list(range(len(topics)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for band in range(LSH_BANDS):
        buckets: dict[bytes, list[int]] = {}
        for index, signature in enumerate(signatures[:, band * rows:(band + 1) * rows]):
            buckets.setdefault(signature.tobytes(), []).append(index)
        for members in buckets.values():
            for other in members[1:]:
                first = members[0]
                if find(first) != find(other) and jaccard(token_sets[first], token_sets[other]) >= threshold:
                    low, high = sorted((find(first), find(other)))
                    parent[high] = low  # the earlier topic (by input order) survives
    return [find(i) for i in range(len(topics))]


def build_catalog(records: list[tuple[str, list[str], str]], config: TopicsConfig) -> tuple[pl.DataFrame, dict]:
    """Normalise and deduplicate ``(path, keywords, source)`` records into the catalog table."""
    counts = {"input_records": len(records), "dropped_empty_path": 0, "dropped_few_keywords": 0,
              "exact_duplicates": 0, "near_duplicates": 0}
    by_key: dict[str, Topic] = {}
    for raw_path, raw_keywords, source in records:
        path, keywords = normalise_path(raw_path), normalise_keywords(raw_keywords)
        if not path:
            counts["dropped_empty_path"] += 1
            continue
        topic = Topic(path, keywords, {source})
        if topic.key in by_key:
            counts["exact_duplicates"] += 1
            kept = by_key[topic.key]
            kept.keywords = normalise_keywords(kept.keywords + keywords)
            kept.sources |= topic.sources
        else:
            by_key[topic.key] = topic
    topics = [t for t in by_key.values() if len(t.keywords) >= config.min_keywords]
    counts["dropped_few_keywords"] = len(by_key) - len(topics)
    roots = near_duplicate_groups(topics, config.near_duplicate_threshold)
    merged: dict[int, Topic] = {}
    for index, root in enumerate(roots):
        if root == index:
            merged[index] = topics[index]
    for index, root in enumerate(roots):
        if root != index:
            counts["near_duplicates"] += 1
            merged[root].keywords = normalise_keywords(merged[root].keywords + topics[index].keywords)
            merged[root].sources |= topics[index].sources
    kept = list(merged.values())
    table = pl.DataFrame({
        "topic_id": [hashlib.sha1(t.key.encode()).hexdigest()[:16] for t in kept],
        "path": [t.path for t in kept],
        "domain": [t.path.split("/", 1)[0] for t in kept],
        "depth": [t.path.count("/") + 1 for t in kept],
        "keywords": [t.keywords for t in kept],
        "sources": [sorted(t.sources) for t in kept],
    }, schema_overrides={"keywords": pl.List(pl.String), "sources": pl.List(pl.String)})
    counts["topics"] = table.height
    counts["domains"] = table["domain"].n_unique()
    return table, counts


def sample_topics(catalog: pl.DataFrame, count: int, seed: int) -> pl.DataFrame:
    """The ``count`` topics ranked first by a seeded hash of their id (nested across counts)."""
    if count > catalog.height:
        raise InputError(f"asked for {count} topics but the catalog has only {catalog.height}")
    rank = [hashlib.sha256(f"{seed}:{tid}".encode()).hexdigest() for tid in catalog["topic_id"]]
    return catalog.with_columns(pl.Series("_rank", rank)).sort("_rank").head(count).drop("_rank")


# --- commands ---------------------------------------------------------------------------------------------


def run_catalog(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config)
    files = source_files(config.topics)
    records = []
    for index, file in enumerate(files):
        if not file.is_file():
            raise InputError(f"topics.sources.{index}: topic file {file} does not exist")
        source = BUILTIN if file == builtin_topics_file() else file.as_posix()
        records += [(path, keywords, source) for path, keywords in read_topic_file(file)]
    inputs = {f"topics_{i}": f for i, f in enumerate(files)}
    if args.extracted is not None:
        read_manifest(args.extracted, stage="topic_extraction")
        extracted = read_topic_file(args.extracted / "topics.json", allow_empty=True)
        records += [(path, keywords, "extracted") for path, keywords in extracted]
        inputs["extracted"] = args.extracted
    with build_artifact(args.out, identity=job_identity(config, "topics", inputs=inputs), inputs=inputs) as artifact:
        table, counts = build_catalog(records, config.topics)
        if table.height == 0:
            raise InputError(f"topics: no topic is left of {counts['input_records']} records (topics.min_keywords "
                             f"{config.topics.min_keywords} dropped {counts['dropped_few_keywords']})")
        table.write_parquet(artifact.path / "topics.parquet")
        paper_format = dict(zip(table["path"], table["keywords"].to_list()))
        (artifact.path / "topics.json").write_text(json.dumps(paper_format, indent=1, ensure_ascii=False) + "\n")
        artifact.counts.update(counts)
        log.info("catalog: %d topics in %d domains (%d exact and %d near duplicates merged, %d dropped)",
                 counts["topics"], counts["domains"], counts["exact_duplicates"], counts["near_duplicates"],
                 counts["dropped_few_keywords"] + counts["dropped_empty_path"])


def run_sample(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    synthetic = config.experiments[args.experiment].synthetic
    if synthetic is None:
        raise InputError(f"experiment {args.experiment!r} has no synthetic data, so no topics to sample")
    read_manifest(args.catalog, stage="topics")
    catalog = pl.read_parquet(args.catalog / "topics.parquet")
    inputs = {"catalog": args.catalog}
    identity = job_identity(config, "sample_topics", args.experiment, inputs)
    with build_artifact(args.out, identity=identity, inputs=inputs) as artifact:
        try:
            sample = sample_topics(catalog, synthetic.topics, config.seed)
        except InputError as error:
            raise InputError(f"experiments.{args.experiment}.synthetic.topics: {error}") from None
        sample.write_parquet(artifact.path / "topics.parquet")
        artifact.counts.update(topics=sample.height, domains=sample["domain"].n_unique())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    catalog = commands.add_parser("catalog", help="normalise and deduplicate topic files into the catalog")
    add_common_arguments(catalog)
    catalog.add_argument("--extracted", type=Path, default=None,
                         help="topic_extraction artifact whose topics.json is merged into the catalog")
    catalog.set_defaults(body=run_catalog)
    sample = commands.add_parser("sample", help="sample T topics for one experiment")
    add_common_arguments(sample, experiment=True)
    sample.add_argument("--catalog", type=Path, required=True, help="topics catalog artifact directory")
    sample.set_defaults(body=run_sample)
    return run_main(lambda args: args.body(args), parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
