"""The plan command: requests counted from the grid, shared between experiments, looked up in the cache, priced;
and, after a real default run, the plan agrees with what the manifests record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from workflow_scripts.config import parse_config
from workflow_scripts.plan.__main__ import main, make_plan
from workflow_scripts.plan.compute import parameters
from workflow_scripts.plan.requests import even_sample, union_of_prefix_rectangles

REPO = Path(__file__).resolve().parents[1]


def tiny_config(data_root: Path, **changes):
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    raw["data_root"] = str(data_root)
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_config(raw, "tiny")


def test_union_of_prefix_rectangles_counts_each_request_once():
    assert union_of_prefix_rectangles([(8, 2), (16, 2)]) == 32
    assert union_of_prefix_rectangles([(100, 10), (300, 10), (100, 20)]) == 300 * 10 + 100 * 10
    assert union_of_prefix_rectangles([(5, 3)]) == 15 and union_of_prefix_rectangles([]) == 0
    assert even_sample(10, 20) == list(range(10)) and len(even_sample(1000, 7)) == 7


def test_parameters_of_the_paper_architectures():
    from workflow_scripts.config.model_configs import get_arch

    assert 300e6 < parameters(get_arch("350m")) < 420e6


def test_plan_before_anything_ran(tmp_path):
    plan = make_plan(tiny_config(tmp_path / "data"), "tiny")
    generate = {line.experiment: line for line in plan.requests if line.stage == "generate"}
    assert {name: line.requests for name, line in generate.items()} == {
        "topic_t8_g2": 16, "topic_t16_g2": 32, "persona_t8_g4": 32}
    # T=16 x G=2 contains T=8 x G=2 (nested topic samples, same template and generator): 16 are shared
    assert generate["topic_t16_g2"].shared == 16 and generate["topic_t8_g2"].shared == 0
    assert generate["persona_t8_g4"].shared == 0  # another template: other prompts
    assert all(line.cached is None for line in generate.values())  # no cache yet: nothing looked up
    assert plan.totals["requests"]["generate"]["to_send"] == 64
    judge = [line for line in plan.requests if line.stage == "cluster_agent"]
    assert len(judge) == 3 and all(line.requests > 0 for line in judge)
    assert plan.totals["cost_usd"]["all"]["list_usd"] == 0  # local models have no price
    assert set(plan.totals["gpu_hours"]) >= {"pretrain", "sft", "evaluate", "total"}
    assert not (tmp_path / "data").exists()  # the plan writes nothing


def test_plan_prices_requests_at_list_and_batch_price(tmp_path):
    price = {"input_per_mtok": 2.5, "output_per_mtok": 10.0, "batch_discount": 0.5}
    config = tiny_config(tmp_path / "data", **{"models.tiny-generator.price": price,
                                               "plan.completion_tokens.generate": 500})
    plan = make_plan(config, "tiny")
    line = next(line for line in plan.requests if line.experiment == "topic_t8_g2" and line.stage == "generate")
    cost = plan.totals["_costs"][id(line)]["all"]
    expected = (16 * line.prompt_tokens_per_request * 2.5 + 16 * 500 * 10.0) / 1e6
    assert cost["list_usd"] == pytest.approx(expected, rel=1e-3)
    assert cost["batch_usd"] == pytest.approx(expected / 2, rel=1e-3)


def test_training_gpu_hours_are_six_n_d_at_the_stated_mfu(tmp_path):
    config = tiny_config(tmp_path / "data", **{"plan.mfu": 0.5, "plan.peak_tflops": 100.0})
    row = make_plan(config, "tiny").experiments[0]
    assert row.gpu_hours["pretrain"] == pytest.approx(6 * row.parameters * row.train_tokens / (0.5 * 100e12 * 3600))
    assert row.train_tokens == 40 * 8 * 128  # the mixes' budget


def test_plan_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--configfile" in capsys.readouterr().out
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    raw["data_root"] = str(tmp_path / "data")
    config.write_text(yaml.safe_dump(raw))
    assert main(["--configfile", str(config), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["requests"]["generate"]["requests"] == 80 and "gpu_hours" in data["totals"]
    assert main(["--configfile", str(config)]) == 0
    text = capsys.readouterr().out
    assert "after sharing" in text and "GPU-hours" in text and "estimated" in text
    assert main(["--configfile", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_plan_agrees_with_the_manifests_of_a_default_run(snakemake_build):
    """After the default pipeline ran: the plan's request counts are the manifests' exactly (and all cached),
    its prompt and completion tokens within 20 %; the judge's count is an upper bound within 20 %."""
    from tests.project import run

    data = json.loads(run(snakemake_build, "python", "-m", "workflow_scripts.plan", "--configfile", "params.yaml",
                          "--json").stdout)
    for line in data["requests"]:
        manifest = json.loads((snakemake_build / "data" / ("generations" if line["stage"] == "generate" else
                                                            "diversity") / (line["experiment"] or "")
                               / "manifest.json").read_text()) if line["experiment"] else None
        if line["stage"] == "generate":
            counts = manifest["counts"]
            assert line["requests"] == counts["requests"], line["experiment"]
            assert line["to_send"] == 0 and line["cached"] == line["after_sharing"], line["experiment"]
            assert line["prompt_tokens"] == pytest.approx(counts["prompt_tokens"], rel=0.2), line["experiment"]
            assert line["completion_tokens"] == pytest.approx(counts["completion_tokens"], rel=0.2)
        elif line["stage"] == "cluster_agent":
            usage = manifest["info"]["cluster_agent_usage"]
            sent = sum(v["requests"] for k, v in usage.items() if k != "cache")
            assert sent <= line["requests"] <= 1.2 * sent, line["experiment"]
