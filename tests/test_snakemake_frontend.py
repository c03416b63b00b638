"""What the Snakemake front-end refuses before it plans anything."""

from __future__ import annotations

from tests.project import REPO, run


def test_snakemake_config_overrides_are_refused_with_the_way_to_override_values():
    result = run(REPO, "snakemake", "-n", "--config", "seed=7", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "snakemake --config seed=7 is not supported" in output and "--configfile COPY" in output
