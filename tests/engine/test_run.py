"""The engine end to end on a tiny config: report contract, resume, failures, lock, checkpoints."""

from __future__ import annotations

import json
import os

import pytest
import torch
from _util import tiny_config, write_config
from click.testing import CliRunner

from compress.cli import cli


def _error(result) -> str:
    """The one error line (progress lines come before it on stderr)."""
    return result.stderr.strip().splitlines()[-1]


def _run(cfg_path, out, *extra):
    return CliRunner().invoke(cli, ["pipeline", str(cfg_path), "--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    cfg_path = write_config(folder, tiny_config())
    out = folder / "run"
    result = _run(cfg_path, out, "--cache-dir", str(folder / "cache"))
    assert result.exit_code == 0, result.output
    return cfg_path, out, json.loads((out / "report.json").read_text())


def test_report_follows_the_contract(tiny_run):
    _, out, report = tiny_run
    assert report["pipeline"] == "tiny" and len(report["config_sha256"]) == 64
    assert report["device"] == "cpu" and report["final"] == "student"
    assert [s["kind"] for s in report["stages"]] == ["teacher", "distill", "export", "benchmark"]
    assert all(s["status"] == "done" and s["seconds"] > 0 for s in report["stages"])
    names = [m["name"] for m in report["models"]]
    assert names == ["teacher", "student"]
    for m in report["models"]:
        assert (out / m["path"]).is_file() and m["bytes"] == (out / m["path"]).stat().st_size
        assert set(m["latency_ms"]) >= {"p50", "p90", "p99", "mean"} and m["threads"] == 1
        assert m["precision"] == "fp32" and 0 <= m["accuracy"] <= 1
    teacher, student = report["models"]
    assert teacher["path"] == "00-teacher/model.onnx" and student["path"] == "02-export/model.onnx"
    assert teacher["params"] > student["params"] and teacher["macs"] > student["macs"]
    # the tiny teacher (2 epochs) is already far above chance on 10 classes
    assert teacher["accuracy"] > 0.5
    stage = json.loads((out / "01-distill" / "stage.json").read_text())
    assert stage["status"] == "done" and stage["config"]["epochs"] == 1
    assert len(stage["input_sha256"]) == 64 and len(stage["output"]["sha256"]) == 64
    assert {"torch", "onnx", "onnxruntime"} <= set(stage["versions"])
    assert "| teacher |" in (out / "report.md").read_text()
    assert (out / "config.resolved.yaml").is_file() and not (out / ".lock").exists()


def test_resume_skips_every_finished_stage(tiny_run):
    cfg_path, out, first = tiny_run
    result = _run(cfg_path, out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [s["status"] for s in report["stages"]] == ["skipped"] * 4
    assert report["models"] == first["models"]
    # a resumed stage shows the seconds it took when it ran, not 0.0
    assert [s["seconds"] for s in report["stages"]] == [s["seconds"] for s in first["stages"]]
    assert min(s["seconds"] for s in report["stages"]) > 0


def test_a_second_out_reuses_the_cached_teacher_and_says_so(tiny_run, tmp_path):
    cfg_path, out, first = tiny_run
    other = tmp_path / "other"
    result = _run(cfg_path, other, "--cache-dir", str(cfg_path.parent / "cache"))
    assert result.exit_code == 0, result.output
    key = json.loads((out / "00-teacher" / "stage.json").read_text())["key"]
    assert (f"[00-teacher] reused from the cache {cfg_path.parent / 'cache' / 'steps' / key[:40]} "
            "(same teacher, data, seed and device; it took ") in result.output
    report = json.loads((other / "report.json").read_text())
    assert [s["status"] for s in report["stages"]] == ["skipped", "done", "done", "done"]
    assert report["stages"][0]["seconds"] == first["stages"][0]["seconds"]
    for f in ("model.safetensors", "model.onnx"):
        assert (other / "00-teacher" / f).read_bytes() == (out / "00-teacher" / f).read_bytes()
    # the student distilled from the copy is the one distilled from the original
    assert report["models"][1]["sha256"] == first["models"][1]["sha256"]


def test_changed_stage_config_reruns_that_stage_and_later(tiny_run, tmp_path):
    cfg_path, out, _ = tiny_run
    result = _run(cfg_path, out, "--set", "target.runs=15")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [s["status"] for s in report["stages"]] == ["skipped", "skipped", "skipped", "done"]
    assert report["models"][0]["runs"] == 15


def test_failed_stage_is_named_and_keeps_earlier_outputs(tiny_run):
    cfg_path, out, _ = tiny_run
    before = (out / "02-export" / "model.onnx").read_bytes()
    # an impossible parity tolerance makes the export stage fail at run time
    result = _run(cfg_path, out, "--set", "stages.1.export.atol=1e-30")
    assert result.exit_code == 1
    assert _error(result).startswith("error: stage 02-export: ONNX parity failed on ")
    assert "Traceback" not in result.output
    assert (out / "02-export" / "model.onnx").read_bytes() == before  # not overwritten
    assert (out / "01-distill" / "model.safetensors").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed"
    assert report["stages"][-1]["status"] == "failed" and report["stages"][-1]["kind"] == "export"
    md = (out / "report.md").read_text()
    assert "Status: **failed** (error: stage 02-export: ONNX parity failed on " in md
    assert "**None**" not in md
    assert not list(out.glob(".*.tmp"))


def test_second_run_into_a_locked_dir_refuses(tiny_run):
    cfg_path, out, _ = tiny_run
    (out / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    try:
        result = _run(cfg_path, out)
    finally:
        (out / ".lock").unlink()
    assert result.exit_code == 2
    assert _error(result) == (
        f"error: {out}: another compress run (pid {os.getppid()}) is writing to this run "
        "directory; wait for it to finish or pass --out DIR"
    )


def test_stale_lock_is_taken_over(tiny_run):
    cfg_path, out, _ = tiny_run
    (out / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    assert _run(cfg_path, out).exit_code == 0


def test_gates_fail_with_exit_3(tiny_run):
    cfg_path, out, _ = tiny_run
    result = _run(cfg_path, out, "--set", "gates.latency_p50_ms_max=0.000001", "--set", "gates.min_accuracy=0.0")
    assert result.exit_code == 3
    assert _error(result).startswith("error: gates.latency_p50_ms_max: student p50 ")
    report = json.loads((out / "report.json").read_text())
    assert [(g["gate"], g["passed"]) for g in report["gates"]] == [
        ("min_accuracy", True), ("latency_p50_ms_max", False)]
    # the report says the run failed, and why
    assert report["status"] == "failed"
    message = _error(result).removeprefix("error: ")
    assert report["failure"] == {"reason": "gate", "message": message}
    # report.md and report.html say it too, with the gate's message (they said "Status: done")
    md = (out / "report.md").read_text()
    assert f"Status: **failed** (gate: {message}). " in md
    assert f"Final model: **{report['final']}**." in md
    html = (out / "report.html").read_text()
    assert '<span class="status-failed">failed</span>' in html
    assert f'<div class="error">gate: {message}</div>' in html


def test_corrupt_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    cfg = tiny_config()
    cfg["teacher"] = {"arch": "resnet", "kwargs": {"width": 8, "depth": [1, 1]}, "checkpoint": str(bad)}
    result = _run(write_config(tmp_path, cfg), tmp_path / "run")
    assert result.exit_code == 2
    assert _error(result) == (
        f"error: teacher.checkpoint: cannot read checkpoint {bad}: not a safetensors file or a "
        "torch state_dict (UnpicklingError)"
    )


def test_wrong_shape_checkpoint_exits_2(tmp_path):
    from compress.models.cnn import ResNet

    ckpt = tmp_path / "teacher.pt"
    torch.save(ResNet(1, 10, width=4, depth=(1, 1)).state_dict(), ckpt)
    cfg = tiny_config()
    cfg["teacher"] = {"arch": "resnet", "kwargs": {"width": 8, "depth": [1, 1]}, "checkpoint": str(ckpt)}
    result = _run(write_config(tmp_path, cfg), tmp_path / "run")
    assert result.exit_code == 2
    assert _error(result) == (
        f"error: teacher.checkpoint: {ckpt} does not match the architecture: stem.0.weight has "
        "shape [4, 1, 3, 3] in the checkpoint, [8, 1, 3, 3] in the model"
    )


def test_safetensors_checkpoint_teacher_is_used(tmp_path):
    from safetensors.torch import save_file

    from compress.models.cnn import ResNet

    torch.manual_seed(0)
    net = ResNet(1, 10, width=8, depth=(1, 1))
    ckpt = tmp_path / "teacher.safetensors"
    save_file(net.state_dict(), str(ckpt))
    cfg = tiny_config()
    cfg["teacher"] = {"arch": "resnet", "kwargs": {"width": 8, "depth": [1, 1]}, "checkpoint": str(ckpt)}
    cfg["stages"] = [{"export": {}}]
    out = tmp_path / "run"
    assert _run(write_config(tmp_path, cfg), out).exit_code == 0
    from compress.artifacts import load_torch

    loaded = load_torch(out / "00-teacher", 1, 10).module
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=False))


def test_baseline_gate_passes_for_the_same_model_and_fails_for_a_slower_baseline(tiny_run, tmp_path):
    from functools import partial

    from compress.bench.baseline import save_baseline
    from compress.bench.compare import CompareSettings

    # the gate's wiring is under test here, not the baseline's power (tests/bench has that):
    # two processes and a short measuring time keep it quick
    save_baseline = partial(save_baseline, settings=CompareSettings(max_seconds=3.0), processes=2)
    cfg_path, out, report = tiny_run
    baseline = tmp_path / "base.json"
    save_baseline(out / "02-export" / "model.onnx", baseline)
    result = _run(cfg_path, out, "--set", "gates.max_slowdown_vs_baseline=0.5", "--set", f"gates.baseline={baseline}")
    assert result.exit_code == 0, result.output
    gate = json.loads((out / "report.json").read_text())["gates"][0]
    assert gate["gate"] == "max_slowdown_vs_baseline" and gate["passed"] and gate["verdict"] == "not slower"
    assert 0.6 < gate["value"] < 1.5
    # a baseline of a far cheaper model with the same input: the student now reads as slower
    import torch.nn as nn

    from compress.export.torch_onnx import export_onnx

    cheap = export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)).eval(), torch.zeros(1, 1, 16, 16),
                        tmp_path / "cheap.onnx", exporter="torchscript")
    save_baseline(cheap, baseline)
    result = _run(cfg_path, out, "--set", "gates.max_slowdown_vs_baseline=0.5", "--set", f"gates.baseline={baseline}")
    assert result.exit_code == 3
    assert _error(result).startswith("error: gates.max_slowdown_vs_baseline: ")
    gate = json.loads((out / "report.json").read_text())["gates"][0]
    assert gate["verdict"] == "slower" and gate["value"] > 1.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    result = _run(write_config(tmp_path, tiny_config()), tmp_path / "run", "--device", "cuda")
    assert result.exit_code == 2
    assert _error(result) == "error: --device cuda: no CUDA device is available on this machine"
    assert not (tmp_path / "run").exists()


def test_the_distilled_student_is_measured_in_ort_beside_the_pruned_one(tiny_run, tmp_path):
    cfg_path, _, first = tiny_run
    cfg = tiny_config()
    cfg["stages"].insert(1, {"prune": {"ratio": 0.5, "round_to": 2, "epochs": 1, "lr": 0.01}})
    out = tmp_path / "pruned"
    result = _run(write_config(tmp_path, cfg), out, "--cache-dir", str(cfg_path.parent / "cache"))
    assert result.exit_code == 0, result.output
    assert "[04-benchmark] exporting student-distilled to measure it in ORT" in result.output
    report = json.loads((out / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    assert list(models) == ["teacher", "student-distilled", "student-pruned"]
    distilled, pruned = models["student-distilled"], models["student-pruned"]
    assert distilled["path"] == "04-benchmark/models/student-distilled.onnx"
    assert (out / distilled["path"]).is_file() and distilled["stage"] == "01-distill"
    # the same distillation as the tiny run (same teacher, seed and config): the same student
    assert distilled["accuracy"] == pytest.approx(first["models"][1]["accuracy"], abs=1e-9)
    assert distilled["macs"] == first["models"][1]["macs"]
    assert pruned["macs"] < distilled["macs"] and pruned["params"] < distilled["params"]
    assert pruned["speedup_vs_teacher"] > 0 and distilled["speedup_vs_teacher"] > 0
