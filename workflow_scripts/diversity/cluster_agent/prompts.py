"""The judge's prompts for the five Cluster-agent stages (our own wording; structure after the paper).

Every prompt states the exact JSON shape expected; the request also carries the JSON schema, so a backend
with constrained decoding cannot answer anything else. The JSON layout puts the fixed part first (the
instructions, the criteria header, the shape) and the documents last, so the requests of one stage share a
long prefix for providers' prompt caches; the form layout (small local models) keeps the documents first and
the request last (a small model follows what it read most recently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

SYSTEM = ("You are a meticulous analyst of text collections. You read documents closely, compare them "
          "on stated criteria and answer with a single JSON object and nothing else.")


@dataclass(frozen=True)
class Item:
    """A metadata attribute or a metric (metrics carry a five-level rubric, level 1 first)."""

    name: str
    description: str
    rubric: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"{self.name}: {self.description}"
        if self.rubric:
            text += " Levels: " + "; ".join(f"{i} = {r}" for i, r in enumerate(self.rubric, 1))
        return text

    @classmethod
    def from_json(cls, value: dict) -> "Item":
        return cls(str(value["name"]).strip(), str(value["description"]).strip(),
                   tuple(str(r).strip() for r in value.get("rubric", ())))

    def to_json(self) -> dict:
        data: dict = {"name": self.name, "description": self.description}
        if self.rubric:
            data["rubric"] = list(self.rubric)
        return data


@dataclass(frozen=True)
class Criteria:
    """The result of stages 1-3: the gathered items and the interleaved header of the clustering prompt."""

    metadata: tuple[Item, ...]
    metrics: tuple[Item, ...]
    sentences: tuple[tuple[str, str], ...]  # (metadata sentence, metric sentence) pairs

    def header(self) -> str:
        lines, number = [], 1
        for metadata_sentence, metric_sentence in self.sentences:
            lines.append(f"{number}. {metadata_sentence}")
            lines.append(f"{number + 1}. {metric_sentence}")
            number += 2
        return "Clustering criteria:\n" + "\n".join(lines)

    def to_json(self) -> dict:
        return {"metadata": [i.to_json() for i in self.metadata], "metrics": [i.to_json() for i in self.metrics],
                "sentences": [list(p) for p in self.sentences], "header": self.header()}


def _documents(labels: Sequence[str], texts: Sequence[str]) -> str:
    return "\n\n".join(f"[{label}]\n<<<\n{text}\n>>>" for label, text in zip(labels, texts))


def _shape(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


FORM_SYSTEM = "You are a careful reader who compares documents. You fill in forms line by line."


def _messages(user: str, layout: str = "json") -> list[dict[str, str]]:
    """``layout`` "form": the judge fills the schema as a form (small local models), so the JSON shape in
    the prompt gives way to a plain request (a small model copies placeholders it is shown)."""
    if layout == "form":
        user = user[:user.rindex("Answer with JSON shaped like")] + "Answer by filling in the form."
        return [{"role": "system", "content": FORM_SYSTEM}, {"role": "user", "content": user}]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _laid_out(fixed: str, material: str, request: str, shape: object, layout: str) -> list[dict[str, str]]:
    """JSON layout: ``fixed`` (same for every request of the stage), ``request``, the shape, then ``material``
    (the documents). Form layout: ``fixed``, ``material``, then ``request`` (the words before any change)."""
    answer = f"Answer with JSON shaped like {_shape(shape)}"
    if layout == "form":
        return _messages(f"{fixed}{material}\n\n{request}\n{answer}", layout)
    return _messages(f"{fixed}{request}\n{answer}\n\n{material}", layout)


def _range(low: int, high: int) -> str:
    return str(low) if low == high else f"between {low} and {high}"


def generation_prompt(texts: Sequence[str], low: int, high: int, layout: str = "json") -> list[dict[str, str]]:
    labels = [f"D{i}" for i in range(1, len(texts) + 1)]
    shape = {"metadata": [{"name": "...", "description": "..."}, "..."],
             "metrics": [{"name": "...", "description": "...", "rubric": ["level 1", "2", "3", "4", "level 5"]},
                         "..."]}
    material = (f"Here are {len(texts)} documents taken at random from a large collection of training texts.\n\n"
                f"{_documents(labels, texts)}")
    request = (
        "Work out how documents of this collection could be told apart.\n"
        f"1. Metadata: {_range(low, high)} attributes that say what a document is (for instance its field "
        "of knowledge, its genre, its intended reader), ordered from the broadest to the most specific. "
        "Give each a short name and a one-sentence description.\n"
        f"2. Metrics: {_range(low, high)} qualities on which any document could be rated. Give each a short "
        "name, a one-sentence description and a rubric of five levels, from level 1 (lowest) to level 5 "
        "(highest)."
    )
    return _laid_out("", material, request, shape, layout)


def gathering_prompt(kind: str, proposals: Sequence[Item], k: int, layout: str = "json") -> list[dict[str, str]]:
    listing = "\n".join(f"- {item.line()}" for item in proposals)
    if kind == "metadata":
        what = "metadata attributes (what a document is)"
        shape = {"items": [{"name": "...", "description": "..."}, "..."]}
        extra = "Order them from the broadest to the most specific."
    else:
        what = "metrics (qualities a document can be rated on)"
        shape = {"items": [{"name": "...", "description": "...", "rubric": ["level 1", "2", "3", "4", "level 5"]},
                           "..."]}
        extra = "Give each a rubric of five levels, from level 1 (lowest) to level 5 (highest)."
    user = (
        f"Several reviewers each looked at a few documents of one collection and proposed {what}. "
        f"Their proposals overlap:\n{listing}\n\n"
        f"Merge them into exactly {k} distinct and concrete items that together capture the most useful "
        "distinctions between documents of this collection. Fold duplicates and near-duplicates together "
        f"and prefer items that apply to any document. {extra}\n"
        f"Answer with JSON shaped like {_shape(shape)}"
    )
    return _messages(user, layout)


def summary_prompt(metadata: Sequence[Item], metrics: Sequence[Item], layout: str = "json") -> list[dict[str, str]]:
    k = len(metadata)
    listing_metadata = "\n".join(f"{i}. {item.line()}" for i, item in enumerate(metadata, 1))
    listing_metrics = "\n".join(f"{i}. {item.line()}" for i, item in enumerate(metrics, 1))
    shape = {"sentences": [{"metadata": "...", "metric": "..."}, "..."]}
    user = (
        "Documents of a collection will be grouped by the following attributes.\n"
        f"Metadata:\n{listing_metadata}\n\nMetrics:\n{listing_metrics}\n\n"
        "Write one plain sentence per metadata item and one per metric, each telling a reader what to compare "
        f"between documents. Return {k} pairs: pair i holds the sentence for metadata item i and the sentence "
        f"for metric i.\nAnswer with JSON shaped like {_shape(shape)}"
    )
    return _messages(user, layout)


def clustering_prompt(criteria: Criteria, labels: Sequence[str], texts: Sequence[str], layout: str = "json") -> list[dict[str, str]]:
    metadata_names = ", ".join(item.name for item in criteria.metadata)
    metric_names = ", ".join(item.name for item in criteria.metrics)
    shape = {"clusters": [{"members": [labels[0], "..."], "uniqueness": "...",
                           "metadata": ["..."] * len(criteria.metadata), "scores": [3] * len(criteria.metrics)},
                          "..."]}
    request = (
        f"Group these {len(labels)} documents into clusters of documents that are alike under the criteria "
        "above. Every document belongs to exactly one cluster; a document unlike all the others forms a "
        "cluster of its own. For each cluster give its members (document ids), the reason it stands apart "
        f"from the other clusters, its value for each metadata item in this order ({metadata_names}) and a "
        f"score from 1 to 5 for each metric in this order ({metric_names})."
    )
    return _laid_out(f"{criteria.header()}\n\n", f"Documents:\n{_documents(labels, texts)}", request, shape,
                     layout)


_VERIFY = ("Do all its members truly share their characteristics under the criteria, so that the cluster holds "
           "together? Explain briefly, then give valid = 1 if it does and valid = 0 if it should be split.")


def verification_prompt(criteria: Criteria, labels: Sequence[str], texts: Sequence[str],
                        clusters: Sequence[tuple[str, Sequence[str], str]],
                        to_check: Sequence[str], layout: str = "json") -> list[dict[str, str]]:
    """``clusters``: (cluster label, member labels, uniqueness reasoning) for every cluster of the round."""
    listing = "\n".join(f"{label}: {', '.join(members)} (stated reason: {reason})"
                        for label, members, reason in clusters)
    shape = {label: {"reasoning": "...", "valid": 1} for label in to_check}
    documents = f"Documents:\n{_documents(labels, texts)}"
    if layout == "form":
        return _laid_out(f"{criteria.header()}\n\n", f"{documents}\n\nAn earlier step grouped these documents as "
                         f"follows:\n{listing}", f"Check each of these clusters: {', '.join(to_check)}. "
                         f"{_VERIFY}", shape, layout)
    # the clusters to check vary per request: named after the documents, only the header and the task lead
    user = (f"{criteria.header()}\n\nAn earlier step grouped the documents below into clusters. Check each "
            f"cluster named at the end. {_VERIFY}\n\n{documents}\n\nThe grouping:\n{listing}\n\n"
            f"Clusters to check: {', '.join(to_check)}.\nAnswer with JSON shaped like {_shape(shape)}")
    return _messages(user, layout)


def labeling_prompt(text: str, layout: str = "json") -> list[dict[str, str]]:
    """Stage 4 with ``clustering_answer: labels``: the kind of one document, in a few words.

    The criteria header is left out on purpose: measured with SmolLM2-135M on twelve texts from twelve
    domains and on twelve rewordings of one text, labels without it told the two apart (12 against 4
    distinct labels), labels with it hardly did (12 against 10)."""
    return _laid_out("", f"Text:\n<<<\n{text}\n>>>", "In two to four words, name the topic of this text.",
                     {"label": "..."}, layout)
