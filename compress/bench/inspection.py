"""What is in an ONNX file: inputs, outputs, opsets, an op histogram, quantization format, size."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from compress.bench.compare import check_onnx_file
from compress.runtime.files import sha256_file

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# ops that only exist in quantized graphs (QOperator format and dynamic quantization)
QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QGemm",
                 "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QAttention"}
INTEGER_OPS = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}


def inspect_model(path: str | Path) -> dict:
    """A JSON-ready summary of the model file; InputError (exit 2) if it is not ONNX."""
    import onnx

    check_onnx_file(path)
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
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
    }


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
    ])


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
