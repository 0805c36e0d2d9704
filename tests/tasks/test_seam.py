"""The task seam, proven with a task of another shape: two named inputs, a vector output. It
trains, distills, exports with parity and is measured in ONNX Runtime through the pipeline."""

from __future__ import annotations

import json

import onnx
from _util import write_config
from click.testing import CliRunner

from compress.cli import cli
from compress.config import pipeline as config_pipeline
from compress.tasks import TASKS

CONFIG = {
    "version": 1, "name": "seam", "seed": 0, "device": "cpu", "task": "vector",
    "target": {"runs": 20, "warmup": 2},
    "data": {"source": "python", "python": "seam_task:splits", "batch_size": 32},
    "teacher": {"python": "seam_task:build", "kwargs": {"hidden": 64},
                "train": {"epochs": 30, "lr": 0.01}},
    "student": {"python": "seam_task:build", "kwargs": {"hidden": 8}},
    "stages": [{"distill": {"epochs": 30, "lr": 0.02}}, {"export": {"atol": 1e-4}}, {"benchmark": {}}],
}


def test_a_two_input_vector_task_runs_the_whole_pipeline(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "vector", "seam_task:VectorTask")
    monkeypatch.setattr(config_pipeline, "TASK_NAMES", (*config_pipeline.TASK_NAMES, "vector"))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, CONFIG)), "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    teacher, student = report["models"]
    for m in (teacher, student):
        assert m["task"] == "vector" and m["metric"] == "cosine" and m["split"] == "test"
        assert m["accuracy"] == m["quality"]["cosine"]  # the headline is the task's metric
        assert m["macs"] > 0 and (out / m["samples"]).is_file()
    # trained and distilled for real: both track the held-out target function
    assert teacher["quality"]["cosine"] > 0.95
    assert student["quality"]["cosine"] > 0.85
    assert student["quality"]["cosine_to_teacher"] > 0.85
    assert teacher["macs"] == 6 * 64 + 4 * 64 + 64 * 3  # the ONNX counter, by hand
    graph = onnx.load(str(out / student["path"])).graph
    assert [i.name for i in graph.input] == ["a", "b"]
    assert [o.name for o in graph.output] == ["vector"]
    export = next(s for s in report["stages"] if s["kind"] == "export")["metrics"]
    assert export["max_abs_diff"] < 1e-5 and export["parity_split"] == "test"
    history = next(s for s in report["stages"] if s["kind"] == "distill")["metrics"]["history"]
    assert set(history[0]) == {"epoch", "loss", "val_cosine"}


def test_unknown_task_is_a_config_error(tmp_path):
    res = CliRunner().invoke(cli, ["validate", str(write_config(tmp_path, {**CONFIG, "task": "vectr"}))])
    assert res.exit_code == 2
    assert res.stderr.strip().endswith("task: unknown task 'vectr'; expected one of: classification, "
                                       "embedding, sequence-classification, causal-lm")
