"""ONNX Runtime quantization helpers: int8 presets per CPU family (and how ``isa: auto`` picks
one), calibration feeds, static and dynamic QDQ quantization, the ops ORT actually runs, and
per-tensor sensitivity (SQNR) ranking.

The quantize stage drives these; benchmarks/quant_speed.py calls them directly.
"""

from __future__ import annotations

import platform
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.common.env import OPTIMUM_INSTALL, optimum_missing  # noqa: F401  (callers import it from here)

# integer kernels in ORT's optimized graph: each one means a quantized node really runs in int8
FUSED_OPS = ("QLinearConv", "QLinearAdd", "QGemm", "MatMulInteger", "ConvInteger", "QLinearMatMul",
             "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearGlobalAveragePool")


ISA_ENV = "COMPRESS_ISA"  # overrides isa: auto's reading of /proc/cpuinfo (qemu shows the host's)


@dataclass(frozen=True)
class Int8Preset:
    """The int8 scheme for one CPU family's integer kernels (ORT QuantType names).

    ``int8_weight_bits`` is what signed weights may use there without the kernels' int16 pair
    sums saturating (QAT exports signed weights, so it takes this). benchmarks/int8_isa.py
    measures every scheme on AVX2 kernels (qemu) and natively.
    """

    name: str
    activation: str
    weight: str
    reduce_range: bool
    arch: str
    int8_weight_bits: int
    why: str

    def scheme(self, per_channel: bool = True) -> str:
        """One line: the types, their symmetry, per-channel and the weight bits."""
        short = {"QUInt8": "U8", "QInt8": "S8"}
        bits = 7 if self.reduce_range else 8
        w_sym = "symmetric" if self.weight == "QInt8" else "asymmetric"
        act = "int8" if self.activation == "QInt8" else "uint8"
        return (f"{short[self.activation]}{short[self.weight]}: {act} activations (asymmetric, "
                f"per-tensor), {'int8' if self.weight == 'QInt8' else 'uint8'} weights ({w_sym}, "
                f"{'per-channel' if per_channel else 'per-tensor'}, {bits}-bit"
                f"{', reduce_range' if self.reduce_range else ''})")


INT8_PRESETS = {
    "x86-vnni": Int8Preset("x86-vnni", "QUInt8", "QInt8", False, "x86_64", 8,
                           "VNNI (vpdpbusd) accumulates u8*s8 in int32: exact, and the fastest "
                           "fused kernels"),
    "x86-avx2": Int8Preset("x86-avx2", "QUInt8", "QUInt8", False, "x86_64", 7,
                           "no VNNI: u8*s8 kernels (vpmaddubsw) saturate pairs in int16; u8*u8 "
                           "kernels widen to int16 first and stay exact with 8-bit weights"),
    "arm64": Int8Preset("arm64", "QInt8", "QInt8", False, "aarch64", 8,
                        "ARM64 dot-product kernels and XNNPACK want signed int8 (S8S8)"),
}
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class IsaChoice:
    """The int8 preset picked for a CPU and why: where the decision came from (``configured``,
    the environment, ``/proc/cpuinfo`` or the machine name) and what it read there."""

    preset: Int8Preset
    source: str
    evidence: str

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def reason(self) -> str:
        return f"{self.source}: {self.evidence}"


def cpu_flags_choice(flags: set[str], source: str = "/proc/cpuinfo") -> IsaChoice:
    """The x86 preset for a set of CPU flags: VNNI kernels if a VNNI flag is there, else AVX2's."""
    found = [f for f in VNNI_FLAGS if f in flags]
    if found:
        return IsaChoice(INT8_PRESETS["x86-vnni"], source, f"{found[0]} present")
    have = [f for f in ("avx512bw", "avx2") if f in flags]
    seen = f"{', '.join(have)} present" if have else "no avx2 flag"
    return IsaChoice(INT8_PRESETS["x86-avx2"], source,
                     f"{seen}, {' and '.join(VNNI_FLAGS)} absent (u8*s8 pair sums saturate)")


def detect_preset(cpuinfo: str | None = None, machine: str | None = None,
                  env: dict[str, str] | None = None) -> IsaChoice:
    """The preset for this CPU (``isa: auto``) and what decided it.

    ``$COMPRESS_ISA`` (a preset name) wins: under qemu user emulation the guest reads the host's
    /proc/cpuinfo while ONNX Runtime picks kernels by the emulated CPUID, so set it there.
    """
    import os

    env = os.environ if env is None else env
    forced = env.get(ISA_ENV, "")
    if forced:
        if forced not in INT8_PRESETS:
            from compress.errors import InputError

            raise InputError(f"${ISA_ENV}={forced!r}: expected one of {', '.join(INT8_PRESETS)}")
        return IsaChoice(INT8_PRESETS[forced], "environment", f"{ISA_ENV}={forced}")
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return IsaChoice(INT8_PRESETS["arm64"], "machine", machine)
    if cpuinfo is None:
        from compress.common.ort import cpu_info

        return cpu_flags_choice(cpu_info()[1])
    flags = {f for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))
             for f in line.split(":", 1)[1].split()}
    return cpu_flags_choice(flags)


def choose_preset(isa: str) -> IsaChoice:
    """``target.isa``: ``auto`` detects this CPU's preset, a preset name is taken as configured."""
    if isa == "auto":
        return detect_preset()
    return IsaChoice(INT8_PRESETS[isa], "configured", f"target.isa: {isa}")


class ArrayReader:
    """Feeds named arrays to ORT in the model's batch size (a ``CalibrationDataReader``)."""

    def __init__(self, arrays: dict[str, np.ndarray], batch: int):
        n = len(next(iter(arrays.values())))
        self.feeds = [{k: v[i : i + batch] for k, v in arrays.items()}
                      for i in range(0, n - batch + 1, batch)]
        self.rewind()

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def __iter__(self):
        return iter(self.feeds)


def input_spec(path: Path) -> tuple[str, int | None, list]:
    """The first input's name, its fixed batch size (None when dynamic) and its shape."""
    import onnx

    inp = onnx.load(str(path), load_external_data=False).graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims[0] if dims else None, dims


def reader_for(path: Path, x: np.ndarray | dict[str, np.ndarray]) -> ArrayReader:
    """A calibration reader over ``x`` (one array for a one-input model, or named arrays) in the
    model's batch size (32 when it is dynamic)."""
    name, batch, _ = input_spec(path)
    arrays = x if isinstance(x, dict) else {name: x.astype(np.float32)}
    n = len(next(iter(arrays.values())))
    return ArrayReader(arrays, batch or min(32, n))


def preprocess(src: Path, dst: Path) -> Path:
    """ORT's quantization pre-processing: shape inference and graph cleanup (BN folding)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def quantize_static_onnx(src: Path, dst: Path, calib: np.ndarray | dict[str, np.ndarray], preset: Int8Preset,
                         exclude: list[str], *, per_channel: bool = True,
                         calibrate_method: str = "minmax", op_types: list[str] | None = None) -> Path:
    """Static QDQ quantization of a pre-processed model, calibrated on ``calib``.

    Args:
        calibrate_method: "minmax", "entropy" or "percentile".
        op_types: ONNX op types to quantize; None quantizes all that ORT supports.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrate_method]
    quantize_static(
        str(src), str(dst), reader_for(src, calib), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types, per_channel=per_channel,
        reduce_range=preset.reduce_range, activation_type=getattr(QuantType, preset.activation),
        weight_type=getattr(QuantType, preset.weight), nodes_to_exclude=exclude,
        calibrate_method=method,
    )
    return dst


def quantize_dynamic_onnx(src: Path, dst: Path, preset: Int8Preset, exclude: list[str], *,
                          per_channel: bool = True, op_types: list[str] | None = None) -> Path:
    """Dynamic quantization: int8 weights, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), op_types_to_quantize=op_types, per_channel=per_channel,
        reduce_range=preset.reduce_range, weight_type=getattr(QuantType, preset.weight),
        nodes_to_exclude=exclude,
    )
    return dst


def fused_ops(path: Path, opt_level: str = "all") -> dict[str, int]:
    """Op counts of the graph ORT actually runs (the session's optimized model)."""
    import onnx

    from compress.common.ort import make_session

    level = "all" if opt_level == "all" else "extended"
    with tempfile.TemporaryDirectory() as tmp:
        # machine-specific: written to a temp dir, never shipped
        optimized = Path(tmp) / "optimized.onnx"
        make_session(path, 1, level, optimized_path=optimized)
        ops = Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    return dict(sorted(ops.items()))


def count_ops(path: Path, op_type: str) -> int:
    """How many nodes of ``op_type`` the stored graph has (before ORT's optimizations)."""
    import onnx

    return sum(n.op_type == op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def run_outputs(path: Path, feeds: list[dict], opt_level: str = "all") -> np.ndarray:
    """The first output of the model over a list of feeds, concatenated on axis 0."""
    from compress.common.ort import make_session

    sess = make_session(path, 1, opt_level)
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def class_feeds(path: Path, x: np.ndarray) -> list[dict]:
    """Validation inputs in the model's batch size (the tail is dropped for a fixed batch)."""
    name, batch, _ = input_spec(path)
    bs = batch or 256
    stop = len(x) - len(x) % bs if batch else len(x)
    return [{name: x[i : i + bs].astype(np.float32)} for i in range(0, stop, bs)]


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the cosine between two output batches (quality without labels)."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).mean())


def channel_sqnr(pre: list[np.ndarray], post: list[np.ndarray], shape: list | None) -> float:
    """Median over channels of the SQNR (dB) of a tensor before vs after its Q/DQ pair.

    Per channel, because one outlier channel dominates a whole-tensor norm: the other channels
    round to a handful of levels while the whole-tensor SQNR still looks healthy.
    """
    def rows(t: list[np.ndarray]) -> np.ndarray:
        t = np.concatenate(t).astype(np.float64)
        if shape and len(shape) >= 2 and all(shape[1:]):  # (batch, C, ...) -> (C, everything else)
            c = shape[1]
            return t.reshape(-1, c, int(np.prod(shape[2:]))).transpose(1, 0, 2).reshape(c, -1)
        return t.reshape(1, -1)

    a, b = rows(pre), rows(post)
    if b.min() >= 0:  # a Relu folded into the Q: its clipping is exact, not quantization noise
        a = np.maximum(a, 0)
    eps = np.finfo(np.float32).eps
    ratio = np.maximum(np.linalg.norm(a, axis=1), eps) / np.maximum(np.linalg.norm(a - b, axis=1), eps)
    return float(np.median(20 * np.log10(ratio)))


def rank_sensitive_nodes(float_path: Path, qdq_path: Path, calib: np.ndarray) -> list[dict]:
    """int8 tensors ranked most sensitive first by SQNR (dB), each with the nodes that keep it
    in float when excluded: its producer (ORT quantizes e.g. a Relu's output) and its consumers.

    Uses ORT's QDQ debugging tools: activations before/after each Q/DQ pair on calibration data,
    and each weight against its dequantized copy. A tensor whose range is blown up by an outlier
    scores near 0 dB, a healthy one 20-40 dB.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    with tempfile.TemporaryDirectory() as tmp:
        aug = Path(tmp) / "augmented.onnx"
        dbg.modify_model_output_intermediate_tensors(str(qdq_path), str(aug))
        acts = dbg.collect_activations(str(aug), reader_for(qdq_path, calib))
    graph = onnx.load(str(float_path)).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.input, *graph.output)}
    errors = {k: channel_sqnr(v["pre_qdq"], v["post_qdq"], shapes.get(k))
              for k, v in dbg.create_activation_matching(acts).items()}
    errors.update(dbg.compute_weight_error(weight_matching(float_path, qdq_path)))
    ranked = []
    for tensor, db in sorted(errors.items(), key=lambda t: t[1]):
        nodes = _nodes_holding(graph, tensor)
        if nodes:
            ranked.append({"tensor": tensor, "sqnr_db": round(float(db), 2), "nodes": nodes})
    return ranked


def weight_matching(float_path: Path, qdq_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Each quantized weight's float original and dequantized copy (the form of ORT's
    ``qdq_loss_debug.create_weight_matching``), dequantized in int32: ORT's subtracts a uint8 zero
    point in uint8, which wraps, so it scored healthy U8U8 weights at -12 dB (U8S8 ones: 44 dB)."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX as SUFFIX

    floats = {i.name: i for i in onnx.load(str(float_path)).graph.initializer}
    graph = onnx.load(str(qdq_path)).graph
    inits = {i.name: i for i in graph.initializer}
    out = {}
    for node in graph.node:
        w = node.input[0]
        name = w.removesuffix(SUFFIX)
        if node.op_type != "DequantizeLinear" or w not in inits or name == w or name not in floats:
            continue
        q = numpy_helper.to_array(inits[w]).astype(np.int64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp = (numpy_helper.to_array(inits[node.input[2]]).astype(np.int64) if len(node.input) > 2
              else np.zeros(scale.shape, np.int64))
        if scale.size > 1:  # per-channel: broadcast along the DQ's axis (ONNX default 1)
            shape = [1] * q.ndim
            shape[next((a.i for a in node.attribute if a.name == "axis"), 1)] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        out[name] = {"float": numpy_helper.to_array(floats[name]),
                     "dequantized": ((q - zp) * scale).astype(np.float32)}
    return out


def _nodes_holding(graph, tensor: str) -> list[str]:
    """Nodes to exclude so ``tensor`` stays float: its consumers and its producer, walking up
    through Relu/Clip (ORT drops those and quantizes the tensor feeding them instead)."""
    names = [n.name for n in graph.node if tensor in n.input]
    while True:
        producer = next((n for n in graph.node if tensor in n.output), None)
        if producer is None:
            return names
        names.insert(0, producer.name)
        if producer.op_type not in ("Relu", "Clip") or not producer.input:
            return names
        tensor = producer.input[0]



def modules_of(path: Path, nodes: list[str]) -> list[str]:
    """The torch module names of float nodes, read off their weight initializers."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {i.name for i in graph.initializer}
    return [n.input[1].removesuffix(".weight") for n in graph.node
            if n.name in nodes and len(n.input) > 1 and n.input[1] in weights]


OPTIMUM_PRESETS = {"x86-vnni": "avx512_vnni", "x86-avx2": "avx2", "arm64": "arm64"}
def optimum_dynamic_int8(src: Path, dst: Path, isa: str) -> Path:
    """What a user of Hugging Face Optimum would ship: ``ORTQuantizer`` with the dynamic,
    per-channel preset for the CPU family (``avx512_vnni``, ``avx2`` or ``arm64``), measured in
    the same run as our models."""
    import logging
    import shutil

    why = optimum_missing()
    if why is not None:
        from compress.errors import StageError

        raise StageError(f"optimum's int8 baseline: {why}")
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    # it warns that a bare ONNX file has no HF config beside it: true, and irrelevant here
    logging.getLogger("optimum").setLevel(logging.ERROR)
    preset = getattr(AutoQuantizationConfig, OPTIMUM_PRESETS[isa])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copyfile(src, work / "model.onnx")
        quantizer = ORTQuantizer.from_pretrained(str(work), file_name="model.onnx")
        quantizer.quantize(save_dir=str(work / "out"),
                           quantization_config=preset(is_static=False, per_channel=True))
        from compress.common.files import atomic_write

        atomic_write(dst, lambda p: shutil.copyfile(work / "out" / "model_quantized.onnx", p))
    return dst
