"""Names, groups and one-paragraph explanations of every metric (used by the CLI's --help and docs)."""

from __future__ import annotations

from workflow_scripts.config.diversity import EMBEDDING, LEXICAL, LLM, METRICS, MODEL

GROUPS = {"lexical": LEXICAL, "ppl": MODEL, "embedding": EMBEDDING, "llm": LLM, "all": METRICS}

DESCRIPTIONS = {
    "context_length": "mean tokens per text (whitespace tokens, or the ids of --tokenizer). Details: min/max.",
    "self_repetition": "mean over texts of log(1 + number of the text's distinct 4-grams that also occur in "
                       "another text); higher = more repetitive. One pass, hashed 4-grams.",
    "ngram_diversity": "sum over n = 1..4 of distinct n-grams / total n-grams (within texts); higher = more "
                       "diverse; depends on corpus size, so compare equal-size subsets.",
    "compression_ratio": "bytes of the texts joined by spaces / bytes of their gzip (level 9) stream; higher = "
                         "more redundant.",
    "perplexity": "exp(total NLL / total predicted tokens) of the texts under --scorer (paper: GPT-2-Large); "
                  "texts cut to --ppl-max-tokens.",
    "perplexity_gap": "|PPL(--scorer) - PPL(--reference)| (paper: GPT-2-Large vs GPT-2-XL).",
    "kmeans": "K-means (k = --kmeans-k) on L2-normalised sentence embeddings; score = mean Euclidean distance "
              "of a text to its cluster centroid (higher = more diverse). Details: inertia ratio, size entropy.",
    "vendi": "Vendi score of the embeddings: exp(entropy of the eigenvalues of X^T X / n), between 1 (all texts "
             "alike) and the embedding dimension.",
    "cluster_agent": "the paper's LLM Cluster-agent: criteria from M rounds of J texts, then N rounds of the judge "
                     "clustering K texts (with self-verification); D = mean over rounds of C_i / S_i. Needs "
                     "--judge.",
}
assert set(DESCRIPTIONS) == set(METRICS)


def parse_metrics(spec: str) -> list[str]:
    """Comma-separated names and groups; '-name' removes. 'all' = every metric, in canonical order."""
    chosen: list[str] = []
    for raw in spec.split(","):
        word = raw.strip()
        if not word:
            continue
        remove = word.startswith("-")
        word = word.lstrip("-")
        names = GROUPS.get(word, (word,))
        for name in names:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r} (known: {', '.join(METRICS)}; groups: "
                                 f"{', '.join(GROUPS)})")
            if remove:
                chosen = [c for c in chosen if c != name]
            elif name not in chosen:
                chosen.append(name)
    if not chosen:
        raise ValueError("no metric selected")
    return [m for m in METRICS if m in chosen]


def help_text() -> str:
    lines = ["metrics:"]
    for name in METRICS:
        lines.append(f"  {name:18s} {DESCRIPTIONS[name]}")
    lines.append("groups: " + "; ".join(f"{g} = {','.join(names)}" for g, names in GROUPS.items() if g != "all")
                 + "; all = every metric. Prefix a name with '-' to leave it out (all,-cluster_agent).")
    return "\n".join(lines)
