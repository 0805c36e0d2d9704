"""The project's own latency regression test: the final artifact of pipelines/mobile.yaml against
a baseline committed in tests/baselines/, through the package's pytest plugin.

Latency depends on the graph, not on trained weights, so the pipeline runs with every training
epoch set to 0: the same export path, quantizer and runtime settings as `make demo`, in seconds.
mobile.yaml prunes with `scope: layer` to a MACs target, so the untrained run cuts the same
number of channels from each layer as the trained one: the graph timed here has the demo's widths
(37,525 bytes, as `make demo`'s final model).
Rewrite the baseline deliberately with `pytest tests/test_latency_regression.py --latency-update`.
"""

from __future__ import annotations

import json

import yaml
from _util import ROOT
from click.testing import CliRunner

from compress.cli import cli

MOBILE = ROOT / "pipelines" / "mobile.yaml"
BASELINE = ROOT / "tests" / "baselines" / "mobile-final.json"


def _no_training_overrides() -> list[str]:
    raw = yaml.safe_load(MOBILE.read_text())
    sets = ["--set", "teacher.train.epochs=0"]
    for i, entry in enumerate(raw["stages"]):
        kind = next(iter(entry))
        if kind in ("distill", "prune"):
            sets += ["--set", f"stages.{i}.{kind}.epochs=0"]
    return sets


def test_mobile_final_artifact_is_not_slower(tmp_path, assert_not_slower):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["pipeline", str(MOBILE), "--out", str(out), "--no-progress", *_no_training_overrides()]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    final = next(m for m in report["models"] if m["name"] == report["final"])
    # the demo's final model runs ~0.02 ms (for the previous ~0.07 ms one the ratio to the
    # baseline across fresh processes was 0.978-0.993, and 1.197 in one of five: a slow session
    # mode of models this small on the AMD EPYC VM), so the bound sits above that swing; it still
    # catches a 25% regression
    verdict = assert_not_slower(out / final["path"], baseline=BASELINE, tolerance=0.25)
    assert verdict.verdict in ("not slower", "inconclusive", "updated")
