"""MACs counted on the exported ONNX graph, each against a hand count written as arithmetic."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from compress.bench.macs import onnx_macs

# SubclassNet on a 1x3x32x32 input; a conv costs C_out * H_out * W_out * C_in/groups * k * k
C1 = 16 * 16 * 16 * 3 * 3 * 3  # 3 -> 16 channels, stride 2: 32x32 -> 16x16
C2 = 32 * 16 * 16 * 16 * 3 * 3  # 16 -> 32 channels
DW = 32 * 16 * 16 * 1 * 3 * 3  # depthwise: groups = 32, one input channel per group
FC = 32 * 10
SUBCLASS_CONV = C1 + C2 + DW
SUBCLASS_TOTAL = SUBCLASS_CONV + FC


class SameConv2d(nn.Conv2d):
    """As EfficientNet ports write it: TF "same" padding worked out in forward, then F.conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        if ph > 0 or pw > 0:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SubclassNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = SameConv2d(3, 16, 3, stride=2)
        self.c2 = SameConv2d(16, 32, 3)
        self.dw = SameConv2d(32, 32, 3, groups=32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dw(F.relu(self.c2(F.relu(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


class FunctionalNet(nn.Module):
    """A conv written as F.conv2d on its own Parameter: no Conv2d module at all."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 3, 5, 5) * 0.1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(F.conv2d(x, self.w, stride=2, padding=2)), 4)
        return self.fc(x.flatten(1))


class Attention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, s, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        return self.o((a @ v).transpose(1, 2).reshape(b, s, d))


def attention_macs(seq: int, dim: int = 16, heads: int = 2) -> int:
    projections = 4 * seq * dim * dim  # q, k, v, o: [S, D] x [D, D]
    scores = heads * seq * seq * (dim // heads)  # [H, S, hd] x [H, hd, S]
    mix = heads * seq * (dim // heads) * seq  # [H, S, S] x [H, S, hd]
    return projections + scores + mix


def export(net: nn.Module, x: torch.Tensor, path, axes: dict) -> str:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": axes}, dynamo=False)
    return str(path)


class Feeds:
    """Calibration reader for quantize_static: four seeded batches."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.batches = iter([{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
                             for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("macs")
    torch.manual_seed(0)
    sub = SubclassNet()
    return {
        "sub_module": sub,
        "sub": export(sub, torch.randn(1, 3, 32, 32), d / "sub.onnx", {0: "batch"}),
        "fun": export(FunctionalNet(), torch.randn(1, 3, 32, 32), d / "fun.onnx", {0: "batch"}),
        "att": export(Attention(), torch.randn(1, 8, 16), d / "att.onnx",
                      {0: "batch", 1: "sequence"}),
        "dir": d,
    }


def test_conv2d_subclass_with_same_padding(nets):
    m = onnx_macs(nets["sub"])
    assert m.total == SUBCLASS_TOTAL == 1_364_288
    assert m.by_op == {"Conv": SUBCLASS_CONV, "Gemm": FC}
    assert [macs for _, _, macs in m.nodes] == [C1, C2, DW, FC]
    assert (m.quantized, m.unknown) == (0, [])
    assert onnx_macs(nets["sub"], {"batch": 3}).total == 3 * SUBCLASS_TOTAL


def test_functional_conv2d(nets):
    m = onnx_macs(nets["fun"])
    conv = 8 * 16 * 16 * 3 * 5 * 5  # 3 -> 8 channels, 5x5, stride 2: 32x32 -> 16x16
    assert m.by_op == {"Conv": conv, "Gemm": 8 * 4 * 4 * 10}
    assert m.total == 153_600 + 1_280


def test_attention_batched_matmuls(nets):
    m = onnx_macs(nets["att"], {"sequence": 8})
    assert m.total == attention_macs(8) == 10_240
    assert sorted(macs for _, op, macs in m.nodes if op == "MatMul") == (
        [2 * 8 * 8 * 8] * 2 + [8 * 16 * 16] * 4)
    # the default dims are batch 1, sequence 128: attention grows with the square of it
    assert onnx_macs(nets["att"]).total == attention_macs(128) == 655_360


def test_static_qdq_keeps_the_total_and_counts_quantized_convs(nets):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    convs_only, full = nets["dir"] / "sub-conv-qdq.onnx", nets["dir"] / "sub-qdq.onnx"
    for out, ops in ((convs_only, ["Conv"]), (full, None)):
        quantize_static(nets["sub"], str(out), Feeds(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=ops, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    m = onnx_macs(convs_only)
    assert (m.total, m.quantized) == (SUBCLASS_TOTAL, SUBCLASS_CONV)
    g = onnx.load(str(convs_only)).graph
    made_by = {o: n.op_type for n in g.node for o in n.output}
    assert [made_by[n.input[1]] for n in g.node if n.op_type == "Conv"] == ["DequantizeLinear"] * 3
    m = onnx_macs(full)
    assert (m.total, m.quantized) == (SUBCLASS_TOTAL, SUBCLASS_TOTAL)
    assert m.by_op == {"Conv": SUBCLASS_CONV, "Gemm": FC}


def test_qoperator_and_dynamic_int8(nets):
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    qop = nets["dir"] / "sub-qop.onnx"
    quantize_static(nets["sub"], str(qop), Feeds(), quant_format=QuantFormat.QOperator)
    m = onnx_macs(qop)
    assert m.by_op == {"QLinearConv": SUBCLASS_CONV, "QGemm": FC}
    assert m.quantized == m.total == SUBCLASS_TOTAL
    dyn = nets["dir"] / "att-dyn.onnx"
    quantize_dynamic(nets["att"], str(dyn))
    m = onnx_macs(dyn, {"sequence": 8})
    # weights are int8; the two activation x activation products stay float
    assert m.by_op == {"MatMulInteger": 4 * 8 * 16 * 16, "MatMul": 2 * 2 * 8 * 8 * 8}
    assert (m.total, m.quantized) == (attention_macs(8), 4 * 8 * 16 * 16)


def test_torch_pruning_undercounts_the_subclass_net(nets):
    import torch_pruning as tp

    tp_macs, _ = tp.utils.count_ops_and_params(nets["sub_module"], torch.randn(1, 3, 32, 32))
    ours = onnx_macs(nets["sub"]).total
    # torch-pruning sees only the Linear (its 320 MACs plus 10 bias adds): the convs count zero
    assert tp_macs == FC + 10
    assert ours == SUBCLASS_TOTAL > 1000 * tp_macs


def _graph(nodes, inputs, output, inits, opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, [output], inits)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def test_conv_transpose_gemm_transposes_and_unsized_nodes():
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.zeros((4, 6, 3, 3), np.float32), "w")  # C_in 4, C_out 6
    b = numpy_helper.from_array(np.zeros((10, 24), np.float32), "b")  # transB: N 10, K 24
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], strides=[2, 2]),
             helper.make_node("Gemm", ["a", "b"], ["g"], transA=1, transB=1),
             helper.make_node("Mystery", ["x"], ["u"], domain="custom"),
             helper.make_node("MatMul", ["u", "u"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", f, ["batch", 4, 5, 5]),
              helper.make_tensor_value_info("a", f, [24, 7])]  # transA: M 7, K 24
    model = _graph(nodes, inputs, helper.make_tensor_value_info("y", f, None), [w, b],
                   extra_opsets=[helper.make_opsetid("custom", 1)])
    before = model.SerializeToString()
    m = onnx_macs(model, {"batch": 2})
    # each of 2 * 4 * 5 * 5 input pixels scatters a 6 x 3 x 3 patch
    assert m.by_op == {"ConvTranspose": 2 * 4 * 5 * 5 * 6 * 3 * 3, "Gemm": 7 * 10 * 24}
    assert m.unknown == ["MatMul_3"]  # fed by an op no shape inference knows: named, not zero
    assert model.SerializeToString() == before  # the caller's model is left as it was


def test_contrib_op_sized_by_ort_symbolic_inference():
    # a 4-bit weight-only MatMulNBits (K 32, N 16) feeding a float MatMul: ONNX's own shape
    # inference does not know the com.microsoft op, so the MatMul after it needs ORT's
    b = numpy_helper.from_array(np.zeros((16, 1, 16), np.uint8), "b")  # N x blocks x 32 nibbles
    scales = numpy_helper.from_array(np.ones(16, np.float32), "scales")
    w2 = numpy_helper.from_array(np.zeros((16, 3), np.float32), "w2")
    nodes = [helper.make_node("MatMulNBits", ["x", "b", "scales"], ["h"], domain="com.microsoft",
                              K=32, N=16, bits=4, block_size=32),
             helper.make_node("MatMul", ["h", "w2"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 32])
    model = _graph(nodes, [x], helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                   [b, scales, w2], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    m = onnx_macs(model, {"sequence": 5})
    assert m.by_op == {"MatMulNBits": 5 * 32 * 16, "MatMul": 5 * 16 * 3}
    assert (m.quantized, m.unknown, m.inputs) == (5 * 32 * 16, [], {"x": [1, 5, 32]})
