"""What is in an ONNX file: inputs, outputs, opsets, an op histogram, quantization format, size,
MACs (counted on the graph, see compress/bench/macs.py), the quantized share of weights and MACs,
and the execution providers this onnxruntime has."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from compress.bench.compare import check_onnx_file
from compress.common.files import sha256_file
from compress.config.rules import QDQ_OPS

# ops that only exist in quantized graphs (QOperator format and dynamic quantization)
QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QGemm",
                 "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QAttention"}
INTEGER_OPS = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
# inputs that carry data (not scales or zero points) of ops with quantization parameters
_DATA_INPUTS = {"QuantizeLinear": {0}, "DequantizeLinear": {0}, "QLinearConv": {0, 3, 8},
                "QLinearMatMul": {0, 3}, "QGemm": {0, 3, 6}, "QLinearAdd": {0, 3},
                "QLinearMul": {0, 3}, "ConvInteger": {0, 1}, "MatMulInteger": {0, 1},
                "DynamicQuantizeMatMul": {0, 1, 4}, "MatMulIntegerToFloat": {0, 1, 6},
                "MatMulNBits": {0, 1, 5}}
# bits per element of the dtypes a weight may be stored in (onnx.TensorProto names)
_WEIGHT_BITS = {"FLOAT": 32, "DOUBLE": 64, "FLOAT16": 16, "BFLOAT16": 16, "INT32": 32,
                "INT8": 8, "UINT8": 8, "INT16": 16, "UINT16": 16, "INT4": 4, "UINT4": 4,
                "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8}
_FLOAT_WEIGHTS = {"FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16"}


def inspect_model(path: str | Path, dims: dict[str, int] | None = None) -> dict:
    """A JSON-ready summary of the model file; InputError (exit 2) if it is not ONNX.

    ``dims`` sizes dynamic input dims for the MAC count (default batch=1, sequence=128, else 1).
    """
    import onnx
    import onnxruntime as ort

    check_onnx_file(path)
    path = Path(path)
    model = onnx.load(str(path), format="protobuf", load_external_data=False)
    g = model.graph
    init_names = {t.name for t in g.initializer}
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                  for n in g.node)
    params = sum(_numel(t.dims) for t in g.initializer)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [_value(v) for v in g.input if v.name not in init_names],
        "outputs": [_value(v) for v in g.output],
        "nodes": len(g.node),
        "ops": dict(ops.most_common()),
        "quantization": quantization_format(ops),
        "qdq": any(op in QDQ_OPS for op in ops),
        "params": params,
        "initializer_dtypes": dict(Counter(
            onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in g.initializer)),
        "external_data": external,
        "weights": weight_stats(g),
        "macs": _macs(model, dims),
        "providers": ort.get_available_providers(),
    }


def weight_stats(graph) -> dict:
    """Elements and bytes of the weight initializers, and the share stored quantized.

    Weights are float initializers and integer ones that hold data (int8/uint8/int4/... weights,
    int32 biases fed to DequantizeLinear); scales, zero points, scalars (an epsilon, a divisor)
    and shape constants are not.
    """
    import onnx

    params = set()
    for n in graph.node:
        data = _DATA_INPUTS.get(n.op_type)
        if data is not None:
            params.update(x for i, x in enumerate(n.input) if i not in data)
    dq_inputs = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    total = {"elements": 0, "bytes": 0, "quantized_elements": 0, "quantized_bytes": 0}
    for t in graph.initializer:
        kind = onnx.TensorProto.DataType.Name(t.data_type)
        if t.name in params or kind not in _WEIGHT_BITS or (kind == "INT32"
                                                             and t.name not in dq_inputs):
            continue
        n = _numel(t.dims)
        if n < 2:
            continue
        size = (n * _WEIGHT_BITS[kind] + 7) // 8
        total["elements"] += n
        total["bytes"] += size
        if kind not in _FLOAT_WEIGHTS:
            total["quantized_elements"] += n
            total["quantized_bytes"] += size
    return {**total,
            "quantized_fraction": _share(total["quantized_elements"], total["elements"]),
            "quantized_bytes_fraction": _share(total["quantized_bytes"], total["bytes"])}


def _macs(model, dims: dict[str, int] | None) -> dict | None:
    """The MAC count as JSON, or None where shape inference rejects the graph."""
    from onnx.shape_inference import InferenceError

    from compress.bench.macs import onnx_macs

    try:
        m = onnx_macs(model, dims)
    except InferenceError:
        return None
    return {"total": m.total, "by_op": dict(sorted(m.by_op.items(), key=lambda kv: -kv[1])),
            "quantized": m.quantized, "quantized_fraction": round(m.quantized_fraction, 6),
            "inputs": m.inputs, "unknown": m.unknown,
            "nodes": [{"name": n, "op": op, "macs": k} for n, op, k in m.nodes]}


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def quantization_format(ops: Counter) -> str:
    """``qdq``, ``qoperator``, ``dynamic`` or ``none``, judged from the op types."""
    if any(op in QDQ_OPS for op in ops):
        return "qdq"
    if any(op in QOPERATOR_OPS for op in ops):
        return "qoperator"
    if any(op in INTEGER_OPS for op in ops):
        return "dynamic"
    return "none"


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _value(v) -> dict:
    import onnx

    t = v.type.tensor_type
    shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
    return {"name": v.name, "dtype": dtype, "shape": shape}


def format_inspection(info: dict) -> str:
    """The human-readable form printed by ``compress inspect``."""
    def io(items: list[dict]) -> str:
        return ", ".join(f"{i['name']} {i['dtype']}[{', '.join(map(str, i['shape']))}]"
                         for i in items)

    hist = ", ".join(f"{k} {v}" for k, v in info["ops"].items())
    quant = {"qdq": "int8 QDQ (QuantizeLinear/DequantizeLinear pairs)",
             "qoperator": "int8 QOperator (QLinear* ops)",
             "dynamic": "int8 dynamic (integer ops, activations quantized at run time)",
             "none": "none"}[info["quantization"]]
    opsets = ", ".join(f"{k} {v}" for k, v in info["opsets"].items())
    return "\n".join([
        f"model      {info['path']}  ({_size(info['bytes'])}, sha256 {info['sha256'][:12]})",
        f"format     IR {info['ir_version']}, opset {opsets}"
        + (f", producer {info['producer']}" if info["producer"] else ""),
        f"inputs     {io(info['inputs'])}",
        f"outputs    {io(info['outputs'])}",
        f"nodes      {info['nodes']}: {hist}",
        f"quantized  {quant}",
        f"params     {info['params']:,} in initializers"
        + ("  (weights in external data files)" if info["external_data"] else ""),
        _weights_line(info["weights"]),
        *_macs_lines(info["macs"]),
        f"providers  {', '.join(info['providers'])}",
    ])


def _weights_line(w: dict) -> str:
    return (f"weights    {w['elements']:,} elements, {_size(w['bytes'])}; quantized "
            f"{w['quantized_fraction']:.1%} of elements, {w['quantized_bytes_fraction']:.1%} "
            "of bytes")


def _macs_lines(m: dict | None) -> list[str]:
    if m is None:
        return ["macs       not counted: ONNX shape inference rejects the graph"]
    shapes = ", ".join(f"{k}[{', '.join(map(str, v))}]" for k, v in m["inputs"].items())
    ops = ", ".join(f"{k} {v:,}" for k, v in m["by_op"].items())
    lines = [f"macs       {m['total']:,} for {shapes or 'the stored shapes'}"
             + (f": {ops}" if ops else "") + f"; quantized {m['quantized_fraction']:.1%}"]
    if m["unknown"]:
        names = ", ".join(m["unknown"][:5]) + (", ..." if len(m["unknown"]) > 5 else "")
        lines.append(f"unsized    {len(m['unknown'])} conv/matmul node(s) left out of the MACs "
                     f"(shapes not inferred): {names}")
    return lines


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
