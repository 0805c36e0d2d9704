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


def sequence_scorer(path, seq: int | str) -> None:
    """A two-class scorer of token ids (logits = sum of ids times [1, -1]), its sequence axis
    dynamic (``"seq"``) or fixed to ``seq`` tokens, as an export of either kind names it."""
    import onnx
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", seq])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    nodes = [helper.make_node("Mul", ["input_ids", "attention_mask"], ["kept"]),
             helper.make_node("Cast", ["kept"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=1),
             helper.make_node("MatMul", ["s", "w"], ["logits"])]
    inits = [helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
             helper.make_tensor("w", TensorProto.FLOAT, [1, 2], [1.0, -1.0])]
    graph = helper.make_graph(nodes, "scorer", [ids, mask], [out], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_sequence_models_latency_is_keyed_by_the_length_it_was_timed_at(tmp_path):
    """seq_lens [32, 8]: the dynamic model is timed at 32 then 8 tokens; the one exported with a
    fixed 16 runs at 16 whatever was asked, and says so (it said seq32 and seq8)."""
    from compress.bench.measure import benchmark_models
    from compress.config.stages import TargetConfig
    from compress.report.facts import p50_tokens
    from compress.tasks.sequence_classification import SequenceClassificationTask

    items = [({"input_ids": torch.arange(1, n + 1), "attention_mask": torch.ones(n, dtype=torch.long)},
              i % 2) for i, n in enumerate((5, 9, 12, 7))]
    arts = []
    for name, seq in (("teacher", "seq"), ("student", 16)):
        path = tmp_path / f"{name}.onnx"
        sequence_scorer(path, seq)
        arts.append(ModelArtifact.from_onnx(name, path, stage=name))
    target = TargetConfig(threads=1, opt_level="all", runs=20, warmup=2)
    found = benchmark_models(arts, SequenceClassificationTask(), items,
                             BenchmarkConfig(seq_lens=[32, 8]), target, tmp_path, tmp_path)
    teacher, student = found
    assert list(teacher.latency_by_length) == ["seq32", "seq8"]
    assert list(student.latency_by_length) == ["seq16"]
    assert teacher.latency_by_length["seq32"] == teacher.latency_ms
    assert (p50_tokens(teacher), p50_tokens(student)) == (32, 16)
    assert [m.quality_samples for m in found] == [4, 4]
