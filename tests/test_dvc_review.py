"""What a person reviewing with DVC sees: `dvc plots show` draws only the project's charts,
`dvc metrics show` lists numbers, and what DVC or ad-hoc sweeps write stays out of git."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from helpers.project import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _outputs(stage: dict, section: str) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in stage.get(section) or []]


def test_no_stage_draws_a_chart_of_its_own():
    """A stage-level ``plots:`` entry becomes one more chart, with DVC's default axes."""
    assert {name: stage["plots"] for name, stage in DVC["stages"].items() if "plots" in stage} == {}


def test_every_file_the_charts_read_is_a_stage_output():
    outputs = {o for stage in DVC["stages"].values() for o in _outputs(stage, "outs")}
    read = set()
    for chart in DVC["plots"]:
        name, spec = next(iter(chart.items())) if isinstance(chart, dict) else (chart, None)
        read.update(spec["y"]) if spec else read.add(name)
    outside = {f for f in read if not any(f == o or f.startswith(o + "/") for o in outputs)}
    assert not outside


@pytest.mark.parametrize(
    "path",
    [
        "reports/sweep/default/best_point.json",
        "reports/sweep/default/best_config.yaml",
        "reports/train/run.json",
        "reports/train/history.csv",
    ],
)
def test_names_and_ids_are_outputs_not_metrics(path):
    metrics = {m for stage in DVC["stages"].values() for m in _outputs(stage, "metrics")}
    outputs = {o for stage in DVC["stages"].values() for o in _outputs(stage, "outs")}
    assert path in outputs and path not in metrics


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("dvc_plots/index.html", True),
        ("reports/sweep/adhoc/summary.md", True),
        ("reports/sweep/my-grid/best.json", True),
        ("reports/sweep/default/summary.md", False),
        ("reports/sweep/best/summary.md", False),
    ],
)
def test_git_ignores_dvc_plots_and_ad_hoc_sweep_reports(path, ignored):
    found = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False
    ).returncode
    assert (found == 0) == ignored
