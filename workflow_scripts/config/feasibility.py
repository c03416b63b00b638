"""Settings that are each valid but impossible together, refused when the configuration loads.

Without these checks a job far down the pipeline would refuse them (the mix job, after generation and
tokenization) or quietly do something else (K-means with fewer clusters than asked). Each message names the
key path and the numbers that make the setting impossible. Only what the configuration alone decides is
checked here; what depends on data (unique token counts, failed generations) is the stages' to refuse.
"""

from __future__ import annotations

from typing import Any

# The assembled configuration (config.root.PipelineConfig, which calls these checks: not imported, no cycle).
PipelineConfig = Any


def _budget_words(config: PipelineConfig) -> str:
    mixes = config.mixes
    if mixes.total_tokens is not None:
        return f"mixes.total_tokens {mixes.total_tokens}"
    return (f"mixes.total_steps {mixes.total_steps} x global_batch_size {mixes.global_batch_size} x seq_length "
            f"{mixes.seq_length}")


def mix_problems(config: PipelineConfig) -> list[str]:
    """A fixed synthetic token count that the fixed budget cannot hold, as the mix job would refuse it."""
    mixes = config.mixes
    if mixes is None:
        return []
    budget, sequence = mixes.budget_tokens, mixes.seq_length
    if budget is not None and budget < sequence:
        return [f"mixes: the budget ({_budget_words(config)}) is less than one sequence of {sequence} tokens"]
    problems = []
    shares = {k: w for k, w in mixes.real_weights.items() if w > 0}
    for name, experiment in config.experiments.items():
        spec, where = experiment.mix, f"experiments.{name}.mix"
        if spec.real_to_synthetic is not None and budget is not None and mixes.real_tokens is not None:
            problems.append(f"{where}.real_to_synthetic: with both a budget ({_budget_words(config)}) and "
                            f"mixes.real_tokens ({mixes.real_tokens}) the mix is over-determined: drop one of them")
        synthetic = spec.synthetic_effective_tokens
        if synthetic is None or budget is None or mixes.real_tokens is not None:
            continue  # the budget is solved from data, or scaled: nothing fixed to compare
        key = f"{where}.synthetic_effective_tokens ({synthetic})"
        if not shares:
            if synthetic != budget:
                problems.append(f"{key}: with every mixes.real_weights zero the synthetic data must fill the "
                                f"budget of {budget} tokens ({_budget_words(config)})")
            continue
        if synthetic >= budget:
            problems.append(f"{key} is not below the budget of {budget} tokens ({_budget_words(config)}): "
                            "nothing is left for the real data mixes.real_weights asks for")
            continue
        if synthetic < sequence:
            problems.append(f"{key} is less than one sequence (mixes.seq_length {sequence})")
        total = sum(shares.values())
        short = {kind: (budget - synthetic) * weight / total for kind, weight in shares.items()
                 if (budget - synthetic) * weight / total < sequence}
        if short:
            problems.append(f"{key} leaves {budget - synthetic} of the budget's {budget} tokens to the real data, "
                            "and " + ", ".join(f"{kind!r} gets {tokens:.0f}" for kind, tokens in short.items())
                            + f", less than one sequence ({sequence})")
    return problems


def kmeans_problems(config: PipelineConfig) -> list[str]:
    """More K-means clusters (a kmeans_k the config sets) than the texts a generated experiment can have (T x G,
    or the bootstrap subset)."""
    diversity = config.diversity
    if "kmeans" not in diversity.metrics or "kmeans_k" not in diversity.embedding.model_fields_set:
        return []  # the default k caps itself at the texts
    k, subset = diversity.embedding.kmeans_k, diversity.bootstrap.subset_size
    problems = []
    for name, experiment in config.experiments.items():
        synthetic = experiment.synthetic
        if synthetic is None:
            continue  # external and mixed sets: their size is known only once built (the stage checks it)
        documents = synthetic.topics * synthetic.generations_per_topic
        scored = min(documents, subset) if subset is not None else documents
        if k > scored:
            counted = f"T x G = {synthetic.topics} x {synthetic.generations_per_topic} = {documents}"
            if subset is not None and subset < documents:
                counted += f", diversity.bootstrap.subset_size {subset}"
            problems.append(f"diversity.embedding.kmeans_k ({k}) is more than the {scored} texts experiment "
                            f"{name!r} scores ({counted})")
    return problems


def check_feasible(config: PipelineConfig) -> None:
    problems = mix_problems(config) + kmeans_problems(config)
    if problems:
        raise ValueError("; ".join(problems))
