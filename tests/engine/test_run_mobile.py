"""The default pipeline's promises, on the real config (slow tier: `make test-slow`)."""

from __future__ import annotations

import json

import pytest
from _util import ROOT
from click.testing import CliRunner

from compress.cli import cli


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mobile_pipeline_meets_its_budgets(tmp_path, seed):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["pipeline", str(ROOT / "pipelines" / "mobile.yaml"), "--out", str(out),
                                      "--no-progress", "--set", f"seed={seed}"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    teacher, final = models["teacher"], models[report["final"]]
    # the 1-point budget the search chose mobile.yaml for, confirmed at seeds 0, 1 and 2 (0.28,
    # 0.83 and 0.00 points on test on the AMD EPYC VM without VNNI); the speedup was 59-62x
    # there, so the bound is far below it
    assert teacher["accuracy"] - final["accuracy"] <= 0.01
    assert teacher["latency_ms"]["p50"] / final["latency_ms"]["p50"] >= 15.0
    if seed:
        return
    again = CliRunner().invoke(cli, ["pipeline", str(ROOT / "pipelines" / "mobile.yaml"), "--out", str(out),
                                     "--no-progress"])
    assert again.exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert {s["status"] for s in report["stages"]} == {"skipped"}
