"""A scripted judge implementing the ``LLMBackend`` protocol: deterministic, schema-valid JSON answers.

For tests and dry runs of the Cluster-agent's logic without a model. It recognises the stage from the
request's schema and answers:

- generation / gathering / summary: fixed items and sentences of the requested counts;
- clustering: documents grouped by their first word (read from the prompt), clusters in order of
  first appearance; so a corpus of near-duplicates gets fewer clusters than a varied one;
- labeling (``clustering_answer: labels``): the text's first word;
- verification: a cluster is invalid when it has more than ``max_valid_size`` members.

``fail_first`` makes the first attempt of chosen stages return an unusable answer (to test retries);
token counts are whitespace words of the prompt and of the answer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from workflow_scripts.llm.types import LLMRequest, LLMResponse

_DOCUMENT = re.compile(r"\[(S\d+)\]\n<<<\n(.*?)\n>>>", re.S)


def stage_of(schema: dict[str, Any]) -> str:
    properties = schema.get("properties", {})
    if "metadata" in properties and "metrics" in properties:
        return "generation"
    if "items" in properties:
        return "gathering"
    if "sentences" in properties:
        return "summary"
    if "clusters" in properties:
        return "clustering"
    if list(properties) == ["label"]:
        return "labeling"
    return "verification"


class ScriptedJudge:
    def __init__(self, max_valid_size: int = 3, fail_first: Sequence[str] = (), name: str = "scripted") -> None:
        self.max_valid_size = max_valid_size
        self.fail_first = set(fail_first)
        self.name = name
        self.calls: list[list[LLMRequest]] = []   # one entry per generate() call

    def identity(self) -> str:
        return f"scripted:{self.name}:{self.max_valid_size}"

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        self.calls.append(list(requests))
        return [self._answer(r) for r in requests]

    def _answer(self, request: LLMRequest) -> LLMResponse:
        schema = request.json_schema or {}
        stage = stage_of(schema)
        prompt = request.messages[-1]["content"]
        if stage in self.fail_first and request.temperature == 0.0:
            return LLMResponse(text="{", parsed=None, prompt_tokens=len(prompt.split()), completion_tokens=1,
                               finish_reason="error", error="invalid JSON: scripted failure")
        value = getattr(self, f"_{stage}")(schema, prompt)
        text = json.dumps(value)
        return LLMResponse(text=text, parsed=value, prompt_tokens=len(prompt.split()),
                           completion_tokens=len(text.split()), finish_reason="stop")

    @staticmethod
    def _count(array_schema: dict[str, Any]) -> int:
        return int(array_schema["minItems"])

    def _generation(self, schema: dict[str, Any], prompt: str) -> dict[str, Any]:
        n_meta = self._count(schema["properties"]["metadata"])
        n_metric = self._count(schema["properties"]["metrics"])
        return {"metadata": [{"name": f"attribute {i}", "description": f"what kind {i}"} for i in range(n_meta)],
                "metrics": [{"name": f"quality {i}", "description": f"how good {i}",
                             "rubric": [f"level {j}" for j in range(1, 6)]} for i in range(n_metric)]}

    def _labeling(self, schema: dict[str, Any], prompt: str) -> dict[str, Any]:
        text = prompt.split("<<<\n", 1)[1].split("\n>>>", 1)[0]
        return {"label": text.split()[0]}

    def _gathering(self, schema: dict[str, Any], prompt: str) -> dict[str, Any]:
        items_schema = schema["properties"]["items"]
        k = self._count(items_schema)
        metrics = "rubric" in items_schema["items"]["properties"]
        items = []
        for i in range(k):
            item = {"name": f"{'metric' if metrics else 'metadata'} {i + 1}", "description": f"merged item {i + 1}"}
            if metrics:
                item["rubric"] = [f"level {j}" for j in range(1, 6)]
            items.append(item)
        return {"items": items}

    def _summary(self, schema: dict[str, Any], prompt: str) -> dict[str, Any]:
        k = self._count(schema["properties"]["sentences"])
        return {"sentences": [{"metadata": f"Compare metadata {i + 1}.", "metric": f"Rate metric {i + 1}."}
                              for i in range(k)]}

    def _clustering(self, schema: dict[str, Any], prompt: str) -> dict[str, Any]:
        cluster_schema = schema["properties"]["clusters"]["items"]["properties"]
        n_meta = self._count(cluster_schema["metadata"])
        n_metric = self._count(cluster_schema["scores"])
        groups: dict[str, list[str]] = {}
        for label, text in _DOCUMENT.findall(prompt):
            key = (text.split() or [""])[0].lower()
            groups.setdefault(key, []).append(label)
        return {"clusters": [{"members": members, "uniqueness": f"all start with {key!r}"[:40],
                              "metadata": [key[:20] or "empty"] * n_meta, "scores": [3] * n_metric}
                             for key, members in groups.items()]}

    def _verification(self, schema: dict[str, Any], prompt: str) -> dict[str, Any]:
        answer = {}
        for label in schema["properties"]:
            match = re.search(rf"^{label}: (.*?) \(stated reason", prompt, re.M)
            size = len(match.group(1).split(", ")) if match else 0
            answer[label] = {"reasoning": f"{size} members", "valid": int(size <= self.max_valid_size)}
        return answer
