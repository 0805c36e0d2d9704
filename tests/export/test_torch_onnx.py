"""ONNX export: one checked file, parity with PyTorch on real digits (through the parity check
the stages run), fixed or dynamic batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from compress.config.stages import ParityLimits
from compress.data.sources import DataConfig, load_data
from compress.export.parity import check_parity
from compress.export.torch_onnx import export_onnx
from compress.models.cnn import MobileNetV2, ResNet
from compress.tasks.classification import ClassificationTask

TASK = ClassificationTask()


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(image_size=16), seed=0)


@pytest.fixture(scope="module")
def digits(data):
    return data.arrays("test")


def _parity(model, path, data, n):
    return check_parity(TASK, model, path, data.test, n, ParityLimits())


@pytest.mark.parametrize("model", [ResNet(1, 10, width=8, depth=(1, 1)), MobileNetV2(1, 10, width_mult=0.25)],
                         ids=["resnet", "mobilenetv2"])
def test_fixed_batch_export_matches_torch(model, data, digits, tmp_path):
    x, _ = digits
    torch.manual_seed(0)
    model.eval()
    path = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "m.onnx", opset=18)
    proto = onnx.load(str(path))
    assert not list(tmp_path.glob("*.data"))  # weights inside the one file
    assert proto.opset_import[0].version == 18
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 16, 16]
    parity = _parity(model, path, data, 64)
    assert parity.samples == 64 and parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0
    assert parity.ok and parity.cosine_min is None  # classification compares top-1, not cosine


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dynamic_batch_export(exporter, data, digits, tmp_path):
    x, _ = digits
    model = ResNet(1, 10, width=8, depth=(1, 1)).eval()
    path = export_onnx(model, torch.from_numpy(x[:2]), tmp_path / "m.onnx", dynamic_batch=True, exporter=exporter)
    dim0 = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value
    parity = _parity(model, path, data, 100)  # includes a ragged last batch of 36
    assert parity.samples == 100 and parity.max_abs_diff < 1e-4 and parity.ok


def test_parity_catches_a_different_model(data, digits, tmp_path):
    x, _ = digits
    torch.manual_seed(0)
    a, b = ResNet(1, 10, width=8, depth=(1, 1)).eval(), ResNet(1, 10, width=8, depth=(1, 1)).eval()
    path = export_onnx(a, torch.from_numpy(x[:1]), tmp_path / "a.onnx")
    parity = _parity(b, path, data, 32)
    assert parity.max_abs_diff > 1e-3 and np.isfinite(parity.max_abs_diff)
    assert not parity.ok and "max_abs_diff" in parity.failed


def test_export_strips_debug_metadata_with_local_paths(data, digits, tmp_path):
    from compress.export.torch_onnx import strip_debug_metadata_

    x, _ = digits
    model = ResNet(1, 10, width=8, depth=(1, 1)).eval()
    raw = tmp_path / "raw.onnx"  # what the dynamo exporter writes on its own
    torch.onnx.export(model, (torch.from_numpy(x[:1]),), str(raw), dynamo=True, external_data=False,
                      report=False)
    raw_proto = onnx.load(str(raw))
    noisy = sum(bool(n.metadata_props) for n in raw_proto.graph.node)
    assert noisy > 10 and b"cnn.py" in raw.read_bytes()  # stack traces name the model's source file

    path = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "m.onnx")
    written = path.read_bytes()
    proto = onnx.load(str(path))
    assert [n for n in proto.graph.node if n.metadata_props] == []
    for local in (b"/work/", str(tmp_path).encode(), b"site-packages", b"cnn.py"):
        assert local not in written
    assert len(written) < 0.7 * raw.stat().st_size  # the traces were a large share of the file
    assert _parity(model, path, data, 32).max_abs_diff < 1e-4  # only metadata went
    assert strip_debug_metadata_(raw_proto) == noisy and strip_debug_metadata_(raw_proto) == 0
