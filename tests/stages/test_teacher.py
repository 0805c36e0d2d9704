"""Start from an ONNX file: quantize, benchmark and package it with no torch model in the run."""

from __future__ import annotations

import json

import torch
from _util import TASK, write_config
from click.testing import CliRunner

from compress.cli import cli


def _classifier_onnx(path):
    from compress.config.data import DataConfig
    from compress.data.sources import load_data
    from compress.export.torch_onnx import export_onnx
    from compress.models.cnn import ResNet
    from compress.train.loop import TrainConfig, fit_

    data = load_data(DataConfig(image_size=16), seed=0)
    torch.manual_seed(0)
    model = ResNet(1, 10, width=8, depth=(1, 1))
    fit_(model, TASK, data.train, data.val, TrainConfig(epochs=4, lr=0.01), 64, torch.device("cpu"),
         progress=False)
    return export_onnx(model, data.example(1), path)


def test_an_onnx_teacher_is_quantized_benchmarked_and_packaged(tmp_path):
    src = _classifier_onnx(tmp_path / "mine.onnx")
    cfg = {
        "version": 1, "name": "bring-onnx", "seed": 0, "device": "cpu",
        "target": {"runs": 20, "warmup": 2},
        "data": {"source": "digits", "image_size": 16},
        "teacher": {"onnx": str(src)},
        "stages": [{"quantize": {"mode": "static", "min_speedup": 0.01, "max_accuracy_drop": 0.02,
                                 "calibration_samples": 64}},
                   {"benchmark": {}}, {"package": {"require": ["nnapi"]}}],
    }
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, cfg)), "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    assert list(models) == ["teacher", "teacher-int8"] and report["final"] == "teacher-int8"
    assert models["teacher"]["sha256"] == report["models"][0]["sha256"]
    assert models["teacher"]["accuracy"] > 0.8  # measured on the test split in ORT
    assert models["teacher"]["accuracy"] - models["teacher-int8"]["accuracy"] <= 0.02
    assert models["teacher-int8"]["precision"] == "int8"
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["quality"]["metric"] == "accuracy"
    assert (out / "00-teacher" / "model.onnx").read_bytes() == src.read_bytes()


def test_an_onnx_teacher_cannot_be_distilled_and_a_bad_file_exits_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    cfg = {"version": 1, "name": "x", "teacher": {"onnx": str(bad)},
           "student": {"arch": "resnet"}, "stages": [{"distill": {}}]}
    res = CliRunner().invoke(cli, ["validate", str(write_config(tmp_path, cfg))])
    assert res.exit_code == 2
    assert res.stderr.strip().endswith(
        "stages[0].distill: distill needs a torch model, but the stages before it give an onnx model; "
        "put it before export")
    cfg = {"version": 1, "name": "x", "device": "cpu", "data": {"image_size": 8},
           "teacher": {"onnx": str(bad)}, "stages": [{"benchmark": {}}]}
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, cfg)), "--out",
                                   str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: teacher.onnx: {bad}: not a valid ONNX model (DecodeError)")
