"""`compress inspect`: MACs, quantized shares and providers on an fp32 and an int8 QDQ conv net."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from compress.cli import cli

# hand count on a 1x1x16x16 input: C_out * H_out * W_out * C_in * k * k per conv
CONV1 = 8 * 16 * 16 * 1 * 3 * 3  # 1 -> 8 channels, padding 1: 16x16 stays
CONV2 = 16 * 8 * 8 * 8 * 3 * 3  # 8 -> 16 channels, stride 2: 16x16 -> 8x8
FC = 16 * 10
MACS = CONV1 + CONV2 + FC  # 92,320
PARAMS = (8 * 9 + 8) + (16 * 8 * 9 + 16) + (16 * 10 + 10)  # 1,418


def run(*args) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


class Feeds:
    def __init__(self):
        rng = np.random.default_rng(0)
        self.batches = iter([{"x": rng.standard_normal((1, 1, 16, 16)).astype(np.float32)}
                             for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    d = tmp_path_factory.mktemp("inspect")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    fp32, int8 = d / "fp32.onnx", d / "int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 1, 16, 16),), str(fp32), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    quantize_static(str(fp32), str(int8), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return fp32, int8


def test_fp32_text(models):
    fp32, _ = models
    code, out, err = run("inspect", fp32)
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert lines[4] == "nodes      7: Conv 2, Relu 2, GlobalAveragePool 1, Flatten 1, Gemm 1"
    assert lines[5] == "quantized  none"
    assert lines[6] == f"params     {PARAMS:,} in initializers"
    # 1,418 float32 weights and biases, 4 bytes each: 5,672 bytes
    assert lines[7] == "weights    1,418 elements, 5.7 kB; quantized 0.0% of elements, 0.0% of bytes"
    assert lines[8] == (f"macs       {MACS:,} for x[1, 1, 16, 16]: Conv {CONV1 + CONV2:,}, "
                        f"Gemm {FC}; quantized 0.0%")
    assert lines[9] == f"providers  {', '.join(ort.get_available_providers())}"
    assert "CPUExecutionProvider" in lines[9] and len(lines) == 10


def test_fp32_json_and_dims(models):
    fp32, _ = models
    code, out, _ = run("inspect", fp32, "--json", "--dim", "batch=4")
    info = json.loads(out)
    assert code == 0
    assert info["macs"]["total"] == 4 * MACS and info["macs"]["inputs"] == {"x": [4, 1, 16, 16]}
    assert info["macs"]["quantized"] == 0 and info["macs"]["unknown"] == []
    assert [n["macs"] for n in info["macs"]["nodes"]] == [4 * CONV1, 4 * CONV2, 4 * FC]
    assert info["weights"]["quantized_fraction"] == 0.0
    assert (info["weights"]["elements"], info["weights"]["bytes"]) == (PARAMS, 4 * PARAMS)


def test_int8_qdq_json(models):
    _, int8 = models
    code, out, _ = run("inspect", int8, "--json")
    info = json.loads(out)
    assert code == 0 and info["quantization"] == "qdq"
    g = onnx.load(str(int8)).graph
    made_by = {o: n.op_type for n in g.node for o in n.output}
    # both convs and the Gemm take their weight from a DequantizeLinear of an int8 tensor
    assert [made_by[n.input[1]] for n in g.node if n.op_type in ("Conv", "Gemm")] == [
        "DequantizeLinear"] * 3
    # a QuantizeLinear/DequantizeLinear pair on each of 6 activations, a DequantizeLinear on each
    # of 3 weights and 3 biases; the Relus are folded into the quantized conv outputs
    assert info["ops"] == {"DequantizeLinear": 12, "QuantizeLinear": 6, "Conv": 2,
                           "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}
    m = info["macs"]
    assert m["total"] == MACS and m["by_op"] == {"Conv": CONV1 + CONV2, "Gemm": FC}
    assert m["quantized"] == MACS and m["quantized_fraction"] == 1.0 > 0.9
    w = info["weights"]
    # int8 weights (1 byte) and int32 biases (4 bytes), nothing left in float
    biases = 8 + 16 + 10
    assert (w["elements"], w["quantized_elements"]) == (PARAMS, PARAMS)
    assert (w["bytes"], w["quantized_fraction"]) == (PARAMS - biases + 4 * biases, 1.0)


def test_int8_text_line(models):
    _, int8 = models
    code, out, _ = run("inspect", int8)
    assert code == 0
    assert f"macs       {MACS:,} for x[1, 1, 16, 16]: Conv {CONV1 + CONV2:,}, Gemm {FC}; " \
           "quantized 100.0%" in out.splitlines()


def test_not_onnx_exits_2(tmp_path):
    text, empty = tmp_path / "notes.onnx", tmp_path / "empty.onnx"
    text.write_text("hello\n")
    empty.write_bytes(b"")
    code, out, err = run("inspect", text)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {text}: not an ONNX model (") and err.count("\n") == 1
    assert run("inspect", empty) == (
        2, "", f"error: {empty}: not an ONNX model (no graph nodes or opset)\n")
    assert run("inspect", text, "--dim", "batch") == (
        2, "", "error: --dim 'batch': expected NAME=SIZE with SIZE a positive integer "
               "(e.g. --dim batch=1 --dim sequence=128)\n")
