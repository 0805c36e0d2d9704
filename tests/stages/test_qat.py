"""QAT with the ORT-aware PT2E quantizer: every conv and residual add fuses in ONNX Runtime."""

from __future__ import annotations

import pytest
import torch
from _util import trained_resnet
from torch.utils.data import Subset

from compress.artifacts import ModelArtifact
from compress.config.stages import QuantizeConfig
from compress.data.sources import DataConfig, load_data
from compress.models.cnn import ResNet
from compress.quant.qat import ANNOTATION, make_ort_quantizer, prepare_qat
from compress.stages.quantize import QuantizeStage


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(), seed=0)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    return trained_resnet(data, tmp_path_factory.getbasetemp())


def test_quantizer_annotates_both_inputs_of_every_residual_add():
    model = ResNet(1, 10, width=4, depth=(1, 1)).train()
    gm = torch.export.export(model, (torch.randn(2, 1, 16, 16),)).module()
    make_ort_quantizer().annotate(gm)
    aten = torch.ops.aten
    adds = [n for n in gm.graph.nodes if n.target in (aten.add.Tensor, aten.add_.Tensor)
            and all(isinstance(a, torch.fx.Node) for a in n.args)]  # not BN's step counters
    convs = [n for n in gm.graph.nodes if n.target == aten.conv2d.default]
    assert len(adds) == 2 and len(convs) == 6
    for add in adds:
        ann = add.meta[ANNOTATION]
        assert set(ann.input_qspec_map) == set(add.args[:2])  # the edge stock quantizers skip
        relu = next(iter(add.users))
        assert relu.meta[ANNOTATION].output_qspec.dtype == torch.uint8  # Q after the ReLU
    for conv in convs:
        w = conv.meta[ANNOTATION].input_qspec_map[conv.args[1]]
        assert (w.dtype, w.qscheme, w.quant_min, w.quant_max) == (
            torch.int8, torch.per_channel_symmetric, -127, 127)
    bn_outs = [n for n in gm.graph.nodes if n.target == aten.batch_norm.default
               and ANNOTATION in n.meta and n.meta[ANNOTATION].output_qspec is not None]
    assert len(bn_outs) == 3  # conv2 and the two shortcut convs end at their batch norm


def test_converted_qat_graph_fuses_every_conv_in_ort(tmp_path, data):
    import numpy as np

    from compress.export.torch_onnx import export_onnx
    from compress.quant.ptq import count_ops, fused_ops, run_outputs
    from compress.quant.qat import convert_qat, export_qdq_onnx

    torch.manual_seed(0)
    model = ResNet(1, 10, width=4, depth=(1, 1)).eval()
    x = torch.stack([data.train[i][0]["input"] for i in range(64)])
    prepared = prepare_qat(model, x[:4])
    fq = [m for m in prepared.modules() if type(m).__name__ == "FusedMovingAvgObsFakeQuantize"]
    assert len(fq) == 6 + 1 + 10  # 6 conv + 1 linear weights; input, 3 relu, 2 add, 3 bn, fc input
    with torch.no_grad():
        prepared.train()
        for i in range(0, 64, 16):  # a few batches set the observers' ranges (batch is dynamic)
            prepared(x[i : i + 16])
    converted = convert_qat(prepared)
    int8 = export_qdq_onnx(converted, x[:1], tmp_path / "int8.onnx", 18)
    fp32 = export_onnx(model, x[:1], tmp_path / "fp32.onnx")
    ops = fused_ops(int8)
    assert ops["QLinearConv"] == count_ops(fp32, "Conv") == 6
    assert ops["QLinearAdd"] == 2 and ops["QGemm"] == 1
    assert "Conv" not in ops and "Add" not in ops and "Gemm" not in ops  # nothing left in float
    feeds = [{"input": x[i : i + 1].numpy()} for i in range(16)]
    with torch.no_grad():
        ref = np.concatenate([converted(x[i : i + 1]).numpy() for i in range(16)])
    assert np.abs(run_outputs(int8, feeds) - ref).max() < 0.05  # ORT int8 matches the torch graph


@pytest.mark.slow
def test_qat_stage_exports_a_fully_fused_int8_model(tmp_path, data, trained):
    small = load_data(DataConfig(), seed=0)
    small.train = Subset(data.train, range(384))  # one short epoch keeps the test fast
    from _util import stage_context

    teacher = ModelArtifact("teacher", "torch", module=trained)
    ctx = stage_context(tmp_path, small, "02-quantize", "stages[1].quantize", teacher, runs=20)
    cfg = QuantizeConfig(mode="qat", min_speedup=0.01, qat={"epochs": 1, "lr": 1e-4, "fold_bn": False})
    r = QuantizeStage(cfg).run(ModelArtifact("student", "torch", module=trained, spec={}), ctx)
    m = r.metrics
    assert m["conv_count"] == 9
    assert m["fused_ops"]["QLinearConv"] == m["conv_count"]
    assert m["fused_ops"]["QLinearAdd"] == 3 and m["fused_ops"]["QGemm"] == 1
    assert "Conv" not in m["ort_ops"] and "Add" not in m["ort_ops"]  # nothing left in float
    assert m["fp32"]["accuracy"] - m["int8"]["accuracy"] <= 0.01
    assert m["int8"]["top1_agreement"] >= 0.97
    assert m["qat"]["kd"] is True and len(m["qat"]["history"]) == 1
    assert [p.name for p in r.publish] == ["student", "student-int8"]
    assert [p.precision for p in r.publish] == ["fp32", "int8"]
    assert r.model.format == "onnx"
