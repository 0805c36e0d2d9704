"""Two real tiny runs (the second resumes a copy of the first with more timed runs, so only its
benchmark runs again): the report names the file to ship and the counts it stands on, and
``compress compare`` judges speed against the teacher both hold and lists the setting changed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _util import tiny_config, write_config
from click.testing import CliRunner

from compress.cli import cli
from compress.records import RunReport


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    cfg = tiny_config()
    cfg["teacher"]["train"]["epochs"] = 1  # the numbers are not the point: the counts are
    cfg["stages"][-1] = {"benchmark": {"max_samples": 100}}
    path = write_config(folder, cfg)
    a, b = folder / "a", folder / "b"
    args = ["pipeline", str(path), "--no-progress", "--cache-dir", str(folder / "cache")]
    first = CliRunner().invoke(cli, [*args, "--out", str(a)])
    assert first.exit_code == 0, first.output
    shutil.copytree(a, b)
    second = CliRunner().invoke(cli, [*args, "--out", str(b), "--set", "target.runs=30"])
    assert second.exit_code == 0, second.output
    return a, b


def test_the_report_of_a_real_run_names_the_file_and_its_counts(two_runs):
    a, _ = two_runs
    report = RunReport.load(a / "report.json")
    teacher, student = report.models
    assert (teacher.quality_samples, student.quality_samples) == (100, 100)
    plotted = [np.load(a / m.samples).size for m in report.models]
    assert [teacher.runs, student.runs] == plotted and teacher.runs == 20
    md = (a / "report.md").read_text().splitlines()
    assert md[4] == ("**Ship: `02-export/model.onnx` (student, the final model). No bundle: add a "
                     "package stage, or run `compress deploy RUN_DIR --target TARGET`.**")
    runs = ("20 timed runs each" if student.runs == 20 else
            f"timed runs per model: teacher 20, student {student.runs:,}")
    assert md[6] == ("## Models (ONNX Runtime CPU, 1 thread(s), batch as exported; quality on 100 "
                     f"test samples; latency over {runs})")


def test_compare_two_real_runs(two_runs, tmp_path):
    a, b = two_runs
    ra, rb = (RunReport.load(d / "report.json") for d in (a, b))
    assert ra.teacher.sha256 == rb.teacher.sha256  # resumed: the same teacher file
    r = CliRunner().invoke(cli, ["compare", str(a), str(b), "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[-2:] == ["settings: 1 key differs (config.resolved.yaml, A -> B):",
                          "  target.runs: 20 -> 30"]
    speed = json.loads((tmp_path / "c.json").read_text())["final"]["speed"]
    (fa, ta), (fb, tb) = ((r.model(r.final).p50, r.teacher.p50) for r in (ra, rb))
    assert speed["basis"] == "teacher"
    assert speed["ratio"] == pytest.approx((fb / tb) / (fa / ta))
    assert lines[-4] == (f"speed: final p50 / teacher p50 {fa / ta:.4f} in A, {fb / tb:.4f} in B: "
                         f"{speed['ratio']:.2f}x; the same teacher file (sha256 "
                         f"{ra.teacher.sha256[:12]}) moved {tb / ta:.2f}x between the runs")
