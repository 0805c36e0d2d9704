"""A tiny digits CNN (fixed batch 1, 1x32x32), its int8 QDQ copy, and bundles of both."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "compress" / "bundle" / "runner.py"
PREPROCESS = {"layout": "NCHW", "image_size": [32, 32], "color": "grayscale",
              "scale": 1 / 255, "mean": [0.5], "std": [0.5]}
GUARD = '''import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "compress"):
            raise ImportError(f"blocked import of {name} (the runner must not need it)")
sys.meta_path.insert(0, _Block())
'''


def digits_32() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (0..16) as 0..255 pixels upsampled 4x, normalized like PREPROCESS."""
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = np.kron(d.images, np.ones((4, 4))) * (255 / 16)  # 8x8 -> 32x32, 0..255
    x = ((pixels / 255 - 0.5) / 0.5).astype(np.float32)[:, None]
    return x, d.target.astype(np.int64)


def _train_cnn(x: np.ndarray, y: np.ndarray):
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(4), nn.Flatten(), nn.Linear(256, 10))
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(4):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(m(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    return m.eval()


def _export(m, path: Path, dynamic: bool) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 1, 32, 32),), str(path), input_names=["image"],
                          output_names=["logits"], dynamo=False, opset_version=17,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}
                          if dynamic else None)


def _quantize(src: Path, dst: Path, calib: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"image": calib[i:i + 1]} for i in range(len(calib)))

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict:
    """Paths of the fp32 (fixed and dynamic batch) and int8 models, plus test data."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    x, y = digits_32()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1500], order[1500:1564]
    m = _train_cnn(x[train], y[train])
    with torch.no_grad():
        torch_logits = m(torch.from_numpy(x[test])).numpy()
    paths = {"fp32": root / "cnn.onnx", "dynamic": root / "cnn_dyn.onnx", "int8": root / "int8.onnx"}
    _export(m, paths["fp32"], dynamic=False)
    _export(m, paths["dynamic"], dynamic=True)
    _quantize(paths["fp32"], paths["int8"], x[train[:64]])
    return {**paths, "x": x[test], "y": y[test], "torch_logits": torch_logits}


def make_spec(models: dict, **kw):
    from compress.bundle import BundleSpec

    acc = float(np.mean(models["torch_logits"].argmax(1) == models["y"]))
    base = dict(task="classification", preprocess=dict(PREPROCESS),
                eval_inputs={"image": models["x"]}, labels=models["y"],
                class_names=[str(i) for i in range(10)],
                quality={"metric": "accuracy", "value": acc, "split": "test"},
                latency={"p50": 0.05, "threads": 1}, config_sha256="ab" * 32)
    return BundleSpec(**{**base, **kw})


@pytest.fixture(scope="session")
def bundles(models, tmp_path_factory) -> dict:
    from compress.bundle import write_bundle

    root = tmp_path_factory.mktemp("bundles")
    return {"fp32": write_bundle(models["fp32"], root / "fp32" / "bundle", make_spec(models)),
            "int8": write_bundle(models["int8"], root / "int8" / "bundle", make_spec(models))}


@pytest.fixture()
def bundle_copy(bundles, tmp_path) -> Path:
    """A private copy of the fp32 bundle, free to break."""
    dst = tmp_path / "bundle"
    shutil.copytree(bundles["fp32"].path, dst)
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
