"""Bundles built as a run builds them: the pipeline's own digits data (its preprocessing record),
a tiny CNN trained on its train split (fixed batch 1, input ``input``), its int8 QDQ copy, and a
real ``compress pipeline`` run (an ONNX teacher, then ``package``) whose bundle the runner tests
use: its preprocess.json and manifest.json were written by the pipeline, not by a test."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "compress" / "bundle" / "runner.py"
GUARD = '''import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "compress"):
            raise ImportError(f"blocked import of {name} (the runner must not need it)")
sys.meta_path.insert(0, _Block())
'''


def _train_cnn(x: np.ndarray, y: np.ndarray, channels: int = 1, epochs: int = 4):
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(4), nn.Flatten(), nn.Linear(256, 10))
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(m(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    return m.eval()


def export(m, path: Path, shape: tuple, dynamic: bool = False) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(*shape),), str(path), input_names=["input"],
                          output_names=["logits"], dynamo=False, opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}
                          if dynamic else None)
    return path


def _quantize(src: Path, dst: Path, calib: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"input": calib[i:i + 1]} for i in range(len(calib)))

        def get_next(self):
            return next(self.it, None)

    from compress.quant.ptq import detect_preset

    # this CPU's preset (U8S8 on VNNI, U8U8 on AVX2): its kernels are exact, so .ort and .onnx agree
    preset = detect_preset().preset
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=getattr(QuantType, preset.activation),
                    weight_type=getattr(QuantType, preset.weight))


@pytest.fixture(scope="session")
def digits_data():
    """The pipeline's own digits source at 32x32 (mobile.yaml's data section)."""
    from compress.config.data import DataConfig
    from compress.data.sources import load_data

    return load_data(DataConfig(image_size=32), seed=0)


@pytest.fixture(scope="session")
def models(tmp_path_factory, digits_data) -> dict:
    """Paths of the fp32 (fixed and dynamic batch) and int8 models, plus 64 test samples."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    x, y = digits_data.arrays("train")
    xt, yt = digits_data.arrays("test")
    m = _train_cnn(x, y)
    with torch.no_grad():
        torch_logits = m(torch.from_numpy(xt[:64])).numpy()
    paths = {"fp32": export(m, root / "cnn.onnx", (1, 1, 32, 32)),
             "dynamic": export(m, root / "cnn_dyn.onnx", (1, 1, 32, 32), dynamic=True),
             "int8": root / "int8.onnx"}
    _quantize(paths["fp32"], paths["int8"], x[:64])
    return {**paths, "x": xt[:64], "y": yt[:64], "torch_logits": torch_logits}


def make_spec(models: dict, data=None, **kw):
    """A BundleSpec with the digits source's own preprocessing record."""
    from compress.bundle import BundleSpec
    from compress.bundle.manifest import Latency, Quality
    from compress.data.images import digits_record

    acc = float(np.mean(models["torch_logits"].argmax(1) == models["y"]))
    base = dict(task="classification", preprocess=digits_record(32),
                eval_inputs={"input": models["x"]}, labels=models["y"],
                class_names=[str(i) for i in range(10)],
                quality=Quality(metric="accuracy", value=acc, split="test", metrics={}),
                latency=Latency(threads=1, opt_level="all", ms={"p50": 0.05}, where="test"),
                config_sha256="ab" * 32)
    return BundleSpec(**{**base, **kw})


@pytest.fixture(scope="session")
def bundles(models, tmp_path_factory) -> dict:
    from compress.bundle import write_bundle

    root = tmp_path_factory.mktemp("bundles")
    return {"fp32": write_bundle(models["fp32"], root / "fp32" / "bundle", make_spec(models)),
            "int8": write_bundle(models["int8"], root / "int8" / "bundle",
                                 make_spec(models, precision="int8"))}


def run_pipeline(folder: Path, cfg: dict) -> tuple[int, str]:
    """``compress pipeline`` on ``cfg`` into ``folder/run``: (exit code, output)."""
    import yaml
    from click.testing import CliRunner

    from compress.cli import cli

    path = folder / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = CliRunner().invoke(cli, ["pipeline", str(path), "--out", str(folder / "run"),
                                   "--no-progress"])
    return res.exit_code, res.output


def onnx_teacher_config(onnx: Path, data: dict, name: str) -> dict:
    return {"version": 1, "name": name, "seed": 0, "device": "cpu",
            "target": {"runs": 20, "warmup": 2}, "data": data, "teacher": {"onnx": str(onnx)},
            "stages": [{"package": {}}]}


@pytest.fixture(scope="session")
def pipeline_bundle(models, tmp_path_factory) -> Path:
    """RUN_DIR/bundle of a real pipeline run on the digits data (mobile.yaml's data section)."""
    folder = tmp_path_factory.mktemp("pipeline")
    cfg = onnx_teacher_config(models["fp32"], {"source": "digits", "image_size": 32}, "digits")
    code, out = run_pipeline(folder, cfg)
    assert code == 0, out
    return folder / "run" / "bundle"


@pytest.fixture()
def bundle_copy(pipeline_bundle, tmp_path) -> Path:
    """A private copy of the pipeline's bundle, free to break."""
    dst = tmp_path / "bundle"
    shutil.copytree(pipeline_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def runner():
    """compress/bundle/runner.py imported as a module (its ``main`` returns the exit code)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bundle_runner", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bundle_runner"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def no_torch_env(tmp_path_factory) -> dict:
    """Environment for a child python in which ``import torch`` / ``import compress`` fail."""
    import os

    d = tmp_path_factory.mktemp("guard")
    (d / "sitecustomize.py").write_text(GUARD)
    return {**os.environ, "PYTHONPATH": str(d), "OMP_NUM_THREADS": "1"}
