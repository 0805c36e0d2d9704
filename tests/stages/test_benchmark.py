"""The benchmark stage: the quality count it logs is the count it measures (it logged the whole
test split under ``benchmark.max_samples``), and each measurement records that count and the
runs its latencies stand on, which the report's captions and plots state."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
from _util import stage_context

from compress.artifacts import ModelArtifact
from compress.common.console import Console, current, use
from compress.config.stages import BenchmarkConfig
from compress.data.sources import DataConfig, load_data
from compress.export.torch_onnx import export_onnx
from compress.models.cnn import ResNet
from compress.report.facts import runs_text, samples_text
from compress.stages.benchmark import BenchmarkStage


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(image_size=16), seed=0)


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """A wide and a narrow untrained ResNet, exported once."""
    folder = tmp_path_factory.mktemp("onnx")
    for name, width in (("teacher", 16), ("student", 4)):
        torch.manual_seed(0)
        net = ResNet(1, 10, width=width, depth=(1, 1)).eval()
        export_onnx(net, data.example(1), folder / f"{name}.onnx")
    return folder


@pytest.fixture
def models(exported, tmp_path):
    """The exports as the run's teacher and student, in their stage folders of the run dir."""
    out = {}
    for i, name in enumerate(("teacher", "student")):
        path = tmp_path / f"0{i}-{name}" / "model.onnx"
        path.parent.mkdir()
        shutil.copy(exported / f"{name}.onnx", path)
        out[name] = ModelArtifact.from_onnx(name, path, params=1, stage=path.parent.name)
    return out


@pytest.mark.parametrize(("max_samples", "logged"), [(50, "50 of {n}"), (None, "{n}")])
def test_the_count_logged_is_the_count_measured(data, models, tmp_path, max_samples, logged):
    n = len(data.test)
    ctx = stage_context(tmp_path, data, "03-benchmark", "stages[2].benchmark", runs=20)
    ctx.published.update(models)
    stream, before = io.StringIO(), current()
    use(Console(stream=stream))
    try:
        result = BenchmarkStage(BenchmarkConfig(max_samples=max_samples)).run(models["student"], ctx)
    finally:
        use(before)
    assert stream.getvalue().splitlines()[0] == (
        "[03-benchmark] timing 2 models interleaved (at least 20 runs each, cpu clock), then "
        f"their quality on {logged.format(n=n)} test samples")
    found = result.measurements
    counted = max_samples or n
    assert [m.quality_samples for m in found] == [counted, counted]
    assert samples_text(found) == f"{counted} test samples"
    # the runs the report states are the latencies the plots draw (n of each saved .npy)
    plotted = [np.load(tmp_path / "03-benchmark" / "latency" / f"{m.name}.npy").size for m in found]
    assert [m.runs for m in found] == plotted and plotted[0] == 20 and plotted[1] >= 20
    assert runs_text(found) == (f"timed runs per model: teacher 20, student {plotted[1]:,}"
                                if plotted[1] > 20 else "20 timed runs each")
