"""compress/quant/ptq.py: the int8 preset of each CPU family, why ``isa: auto`` picks one (the flags
it read), and what a preset promises on its ISA's kernels: the fused integer kernels compute what
the QDQ graph says (no int16 saturation), so accuracy is the scheme's, not the machine's.

The AVX2 side runs on any x86 host: natively for the quantization (settings, accuracy on a real
model) and, for the kernels, under ``qemu-x86_64 -cpu Haswell`` (tests/quant/haswell.py), which
gives ONNX Runtime AVX2-only kernels even on a VNNI machine. Those tests skip, saying how to get
qemu, when it has not been fetched.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from compress.errors import InputError
from compress.quant.ptq import (
    INT8_PRESETS,
    choose_preset,
    detect_preset,
    preprocess,
    quantize_static_onnx,
    run_outputs,
)
from tests.quant import haswell

needs_qemu = pytest.mark.skipif(not haswell.available(), reason=haswell.SKIP)
SATURATES = "(u8*s8 pair sums saturate)"


@pytest.mark.parametrize(("cpuinfo", "machine", "name", "reason"), [
    ("flags\t: fpu sse avx2 avx512f avx512_vnni", "x86_64", "x86-vnni", "/proc/cpuinfo: avx512_vnni present"),
    ("flags\t: fpu sse avx2 avx_vnni", "x86_64", "x86-vnni", "/proc/cpuinfo: avx_vnni present"),
    # Skylake-SP: AVX-512 without VNNI multiplies u8*s8 with the same saturating vpmaddubsw
    ("flags\t: fpu avx2 avx512f avx512bw", "x86_64", "x86-avx2",
     f"/proc/cpuinfo: avx512bw, avx2 present, avx512_vnni and avx_vnni absent {SATURATES}"),
    ("flags\t: fpu sse avx2", "x86_64", "x86-avx2",
     f"/proc/cpuinfo: avx2 present, avx512_vnni and avx_vnni absent {SATURATES}"),
    ("Features\t: fp asimd asimddp", "aarch64", "arm64", "machine: aarch64"),
])
def test_detection_says_which_flags_decided(cpuinfo, machine, name, reason):
    got = detect_preset(cpuinfo, machine, env={})
    assert (got.name, got.reason) == (name, reason)
    assert got.preset is INT8_PRESETS[name]


def test_environment_and_config_override_detection():
    vnni = "flags\t: avx2 avx512_vnni"
    got = detect_preset(vnni, "x86_64", env={"COMPRESS_ISA": "x86-avx2"})
    assert (got.name, got.reason) == ("x86-avx2", "environment: COMPRESS_ISA=x86-avx2")
    with pytest.raises(InputError) as e:
        detect_preset(vnni, "x86_64", env={"COMPRESS_ISA": "avx2"})
    assert str(e.value) == "$COMPRESS_ISA='avx2': expected one of x86-vnni, x86-avx2, arm64"
    assert choose_preset("arm64").reason == "configured: target.isa: arm64"


def test_each_preset_describes_its_scheme():
    """x86-avx2 is U8U8 with 8-bit weights (benchmarks/int8_isa.py: U8S8 lost 3.6 points of the
    teacher on AVX2 kernels, 7-bit weights cost the small student), QAT's signed weights 7-bit."""
    p = INT8_PRESETS
    assert p["x86-avx2"].scheme() == ("U8U8: uint8 activations (asymmetric, per-tensor), uint8 "
                                      "weights (asymmetric, per-channel, 8-bit)")
    assert p["x86-vnni"].scheme(per_channel=False) == (
        "U8S8: uint8 activations (asymmetric, per-tensor), int8 weights (symmetric, per-tensor, 8-bit)")
    assert p["arm64"].scheme().startswith("S8S8: int8 activations")
    assert [(k, v.int8_weight_bits, v.reduce_range) for k, v in p.items()] == [
        ("x86-vnni", 8, False), ("x86-avx2", 7, False), ("arm64", 8, False)]


# -- the kernels: fused int8 vs the QDQ graph it stands for -----------------------------------


def _conv_model(path) -> None:
    """One float Conv (16 -> 8 channels, 3x3) with weights that fill the int8 range."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, (8, 16, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 8, 8])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _inked(n: int, seed: int) -> np.ndarray:
    """Digit-like inputs: half the pixels 0, the rest near the top of the range (uint8 ~220-255)."""
    rng = np.random.default_rng(seed)
    return ((rng.random((n, 16, 8, 8)) < 0.5) * rng.uniform(0.85, 1.0, (n, 16, 8, 8))).astype(np.float32)


def _out_scale(path) -> float:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: i for i in g.initializer}
    dq = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] == g.output[0].name)
    return float(numpy_helper.to_array(inits[dq.input[1]]))


@pytest.fixture(scope="module")
def conv_int8(tmp_path_factory) -> dict:
    """The conv quantized with each x86 preset, and inputs it did not calibrate on."""
    root = tmp_path_factory.mktemp("conv")
    _conv_model(root / "conv.onnx")
    models = {name: quantize_static_onnx(root / "conv.onnx", root / f"{name}.onnx", _inked(64, 0),
                                         INT8_PRESETS[name], [])
              for name in ("x86-vnni", "x86-avx2")}
    return {"models": models, "x": _inked(32, 1), "root": root}


def _steps(fused: np.ndarray, qdq: np.ndarray, path) -> float:
    """Largest gap between the fused kernels and the QDQ graph, in output quantization steps."""
    return float(np.abs(fused - qdq).max() / _out_scale(path))


def test_chosen_preset_is_exact_on_this_cpu(conv_int8):
    """What the preset auto picks here computes the QDQ graph to within one rounding step (VNNI
    or AVX2: whichever this CPU is). U8U8, the x86-avx2 preset, is exact on every x86 kernel."""
    chosen = detect_preset().name
    for name in {chosen, "x86-avx2"}:
        path = conv_int8["models"][name]
        fused = run_outputs(path, [{"x": conv_int8["x"]}], "all")
        qdq = run_outputs(path, [{"x": conv_int8["x"]}], "disable")
        assert _steps(fused, qdq, path) <= 1.0, name


@needs_qemu
def test_on_avx2_kernels_only_the_avx2_preset_is_exact(conv_int8, tmp_path):
    """Under qemu -cpu Haswell: x86-avx2 (U8U8) stays exact; x86-vnni (U8S8, 8-bit weights)
    saturates. The second also proves the emulated kernels are AVX2's, not the host's VNNI."""
    models = {f"{n}-{lvl}": (p, lvl) for n, p in conv_int8["models"].items() for lvl in ("all", "disable")}
    out = haswell.run_models(models, conv_int8["x"], tmp_path)
    avx2, vnni = conv_int8["models"]["x86-avx2"], conv_int8["models"]["x86-vnni"]
    assert _steps(out["x86-avx2-all"], out["x86-avx2-disable"], avx2) <= 1.0
    assert _steps(out["x86-vnni-all"], out["x86-vnni-disable"], vnni) > 10


# -- a real model: the quantize tests' digits ResNet --------------------------------------------


@pytest.fixture(scope="module")
def resnet_int8(tmp_path_factory) -> dict:
    """The digits ResNet (tests/_util.py) and its outlier copy (see tests/stages/test_quantize.py),
    fp32 and static int8 with the x86-avx2 preset as the quantize stage makes it (per-channel,
    minmax, 256 training images); the outlier one keeps stages.1.0's conv1/relu/conv2 in float."""
    import torch
    from _util import trained_resnet

    from compress.data.sources import DataConfig, load_data
    from compress.export.torch_onnx import export_onnx

    data = load_data(DataConfig(), seed=0)
    model = trained_resnet(data, tmp_path_factory.getbasetemp())
    outlier = copy.deepcopy(model)
    block = outlier.stages[1][0]
    with torch.no_grad():
        block.bn1.bias[0] += 1000.0
        block.conv2.weight[:, 0] = 0.0
    root = tmp_path_factory.mktemp("resnet")
    calib = torch.stack([data.train[i][0]["input"] for i in
                         data.calibration(256, seed=0).indices]).numpy()
    x, y = data.arrays("val")
    paths = {}
    for name, net in (("plain", model), ("outlier", outlier)):
        # a dynamic batch: qemu runs the val split in batches of 64, not 360 calls
        fp32 = export_onnx(net, data.example(1), root / f"{name}.onnx", dynamic_batch=True)
        pre = preprocess(fp32, root / f"{name}-pre.onnx")
        exclude = _float_nodes(pre) if name == "outlier" else []
        paths[name] = fp32
        paths[f"{name}-int8"] = quantize_static_onnx(pre, root / f"{name}-int8.onnx", calib,
                                                     INT8_PRESETS["x86-avx2"], exclude)
    return {"paths": paths, "x": x, "y": y}


def _float_nodes(path) -> list[str]:
    """The nodes of stages.1.0's conv1 -> relu -> conv2 (the outlier activation's producer and
    consumer: what the stage's fallback keeps in float)."""
    import onnx

    g = onnx.load(str(path)).graph
    conv1 = next(n for n in g.node if "stages.1.0.conv1.weight" in n.input)
    relu = next(n for n in g.node if conv1.output[0] in n.input)
    conv2 = next(n for n in g.node if relu.output[0] in n.input)
    return [conv1.name, relu.name, conv2.name]


def _quality(logits: dict[str, np.ndarray], y: np.ndarray) -> dict[str, tuple[float, float]]:
    """(accuracy drop vs fp32, top-1 agreement with fp32) of both int8 models."""
    out = {}
    for name in ("plain", "outlier"):
        ref, q = logits[name].argmax(1), logits[f"{name}-int8"].argmax(1)
        out[name] = (float(np.mean(ref == y) - np.mean(q == y)), float(np.mean(q == ref)))
    return out


# the bounds of tests/stages/test_quantize.py: max_accuracy_drop 0.5 points, agreement 98%
def _assert_keeps_accuracy(quality: dict[str, tuple[float, float]]) -> None:
    for name, (drop, agree) in quality.items():
        assert drop <= 0.005 and agree >= 0.98, (name, drop, agree)


def test_avx2_preset_keeps_accuracy_of_a_real_model(resnet_int8):
    """Natively (exact U8U8 kernels on any x86, so the same figures as on AVX2)."""
    p = resnet_int8["paths"]
    feeds = [{"input": resnet_int8["x"]}]
    logits = {k: run_outputs(v, feeds) for k, v in p.items()}
    _assert_keeps_accuracy(_quality(logits, resnet_int8["y"]))


@pytest.mark.slow  # ~20 s of emulation (115 s wall on a loaded 2-core box)
@needs_qemu
def test_avx2_preset_keeps_accuracy_on_avx2_kernels(resnet_int8, tmp_path):
    """The same models run under qemu -cpu Haswell: the figures the stage measures on an
    AVX2-only CPU (test_static_int8_keeps_accuracy... and test_fallback_keeps_the_outlier...)."""
    p = resnet_int8["paths"]
    logits = haswell.run_models({k: (v, "all") for k, v in p.items()}, resnet_int8["x"], tmp_path)
    _assert_keeps_accuracy(_quality(logits, resnet_int8["y"]))


def test_weight_errors_are_right_for_uint8_weights(conv_int8):
    """ORT's create_weight_matching wraps uint8 zero points (healthy U8U8 weights scored below
    0 dB, and the fallback's ranking then kept healthy layers in float); ours agrees with it on
    int8 weights and scores the uint8 ones as well as the int8 ones."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from compress.quant.ptq import weight_matching

    fp32 = conv_int8["root"] / "conv.onnx"
    ours = {n: dbg.compute_weight_error(weight_matching(fp32, p)) for n, p in conv_int8["models"].items()}
    theirs = dbg.compute_weight_error(dbg.create_weight_matching(str(fp32), str(conv_int8["models"]["x86-vnni"])))
    assert list(ours["x86-vnni"]) == list(theirs) == ["w"]
    assert ours["x86-vnni"]["w"] == pytest.approx(theirs["w"], abs=0.01)
    assert ours["x86-avx2"]["w"] > 40 and ours["x86-vnni"]["w"] > 40
