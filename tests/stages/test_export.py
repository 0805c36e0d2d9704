"""The export stage's own parity path: a faithful export passes with its measured values in the
typed report; a model whose ONNX graph computes something else fails with the StageError text."""

from __future__ import annotations

import pytest
import torch
from _util import stage_context
from torch import nn

from compress.artifacts import ModelArtifact
from compress.config.stages import ExportConfig
from compress.data.sources import DataConfig, load_data
from compress.errors import StageError
from compress.stage_reports import ExportReport, read_report
from compress.stages.export import ExportStage


class Net(nn.Module):
    """A small classifier; with ``onnx_shift`` its exported graph adds that to every logit (the
    branch runs only while torch.onnx exports), so ORT and PyTorch disagree by exactly it."""

    def __init__(self, onnx_shift: float = 0.0):
        super().__init__()
        self.conv, self.fc, self.onnx_shift = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 10), onnx_shift

    def forward(self, x):
        out = self.fc(torch.relu(self.conv(x)).mean((2, 3)))
        if self.onnx_shift and torch.onnx.is_in_onnx_export():
            out = out + self.onnx_shift
        return out


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(source="digits", image_size=16, batch_size=64), seed=0)


def run(net: nn.Module, tmp_path, data, **cfg):
    torch.manual_seed(0)
    ctx = stage_context(tmp_path, data, "02-export", "stages[1].export")
    art = ModelArtifact("student", "torch", net.eval(), {"arch": "test"}, meta={"stage": "01-distill"})
    return ExportStage(ExportConfig(exporter="torchscript", parity_samples=32, **cfg)).run(art, ctx)


def test_faithful_export_reports_its_parity(tmp_path, data):
    torch.manual_seed(0)
    r = run(Net(), tmp_path, data)
    rep = r.report
    assert isinstance(rep, ExportReport)
    assert rep.max_abs_diff < 1e-5 and rep.top1_agreement == 1.0 and rep.cosine_min is None
    assert (rep.parity_samples, rep.parity_split) == (32, "test")
    assert rep.bytes == (tmp_path / "02-export" / "model.onnx").stat().st_size == r.model.path.stat().st_size
    assert (r.model.format, r.model.meta["stage"], r.publish) == ("onnx", "02-export", [r.model])
    # report.json's keys, and read back to the same report
    assert list(r.metrics) == ["max_abs_diff", "top1_agreement", "parity_samples", "parity_split", "bytes"]
    assert read_report("export", r.metrics) == rep


def test_export_that_computes_something_else_fails_with_the_numbers(tmp_path, data):
    torch.manual_seed(0)
    with pytest.raises(StageError) as e:
        run(Net(onnx_shift=0.5), tmp_path, data, atol=1e-3)
    # a constant shift keeps every argmax: agreement holds, the max abs diff does not
    assert str(e.value) == ("ONNX parity failed on 32 test inputs: max abs diff 0.5 (atol 0.001), "
                            "top-1 agreement 1.0000 (min 0.99)")
    assert e.value.exit_code == 1
