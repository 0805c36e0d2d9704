"""Multiply-accumulates (MACs) counted on an ONNX graph, from inferred shapes.

Why on the ONNX graph: torch-pruning's ``count_ops_and_params`` hooks module types, so a
``Conv2d`` subclass (EfficientNet ports subclass it for "same" padding) or a functional
``F.conv2d`` counts as zero: a real 385M-MAC network was reported at 21M. The exported graph has
one ``Conv`` node per convolution, however the Python code spelled it.

Why our own counter and not ``onnx-tool`` (1.0.1, evaluated on the nets in tests/bench/
test_macs.py): onnx-tool adds bias adds, activations, pooling, softmax and even Quantize/
DequantizeLinear to its MACs (a conv net counted by hand at 1,364,288 MACs read 1,413,453, its
QDQ copy 1,574,101; the attention block, 10,240 by hand, read 15,872), it raises
NotImplementedError on QOperator (QGemm) and dynamic-int8 (DynamicQuantizeLinear) graphs, and it
cannot tell which MACs run in integer kernels. This module counts only the multiply-accumulates
of the conv/matmul family, matches hand counts exactly, counts fp32, QDQ, QOperator and dynamic
int8 graphs alike, says which MACs are quantized, names the nodes it could not size instead of
counting them as zero, and needs nothing beyond onnx (onnxruntime only as a fallback for
contrib-op shapes).

``count_macs`` exports a torch module and counts its graph here: every model in the report, and
every prune step, is measured with this one counter.

Conventions: a convolution costs ``N * C_out * prod(out_spatial) * C_in / groups *
prod(kernel)`` MACs; a matrix product ``batch * M * N * K``; bias adds and elementwise ops cost
none. Subgraphs (If/Loop bodies) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx
    from torch import nn

# op type -> (formula, index of input A, index of weight input B). One table for every form.
_RULES: dict[str, tuple[str, int, int]] = {
    "Conv": ("conv", 0, 1), "ConvTranspose": ("conv_t", 0, 1), "FusedConv": ("conv", 0, 1),
    "Gemm": ("gemm", 0, 1), "FusedGemm": ("gemm", 0, 1),
    "MatMul": ("matmul", 0, 1), "FusedMatMul": ("matmul", 0, 1),
    "QLinearConv": ("conv", 0, 3), "ConvInteger": ("conv", 0, 1),
    "QLinearMatMul": ("matmul", 0, 3), "MatMulInteger": ("matmul", 0, 1),
    "QGemm": ("gemm", 0, 3), "DynamicQuantizeMatMul": ("matmul", 0, 1),
    "MatMulIntegerToFloat": ("matmul", 0, 1), "MatMulNBits": ("nbits", 0, 1),
}
# these compute in integer (or packed low-bit) kernels whatever feeds them
_QUANTIZED_OPS = {"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm",
                  "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits"}
# elements: constants this small are shape arithmetic, never weights, so they may be folded
_FOLD_LIMIT = 4096
# (a folded DequantizeLinear would hide that a weight is stored quantized)
_UNFOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "If", "Loop", "Scan", "DequantizeLinear",
               "QuantizeLinear", "DynamicQuantizeLinear"}
# ops a weight may pass through between DequantizeLinear and the conv/matmul
_PASS_THROUGH = {"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Cast"}


@dataclass
class MacCount:
    """MACs of one ONNX graph.

    Attributes:
        total: all MACs of conv/matmul-family nodes.
        by_op: MACs per op type.
        quantized: MACs done by integer/quantized ops (QLinear*, *Integer, QDQ-fed weights).
        nodes: ``(node name, op type, macs)`` for every counted node, in graph order.
        unknown: names of conv/matmul nodes whose shapes could not be inferred (not in total).
        inputs: the graph input shapes the count assumes, dynamic dims resolved.
    """

    total: int
    by_op: dict[str, int]
    quantized: int
    nodes: list[tuple[str, str, int]]
    unknown: list[str] = field(default_factory=list)
    inputs: dict[str, list[int]] = field(default_factory=dict)

    @property
    def quantized_fraction(self) -> float:
        """Share of MACs done by quantized ops (0 for an empty count)."""
        return self.quantized / self.total if self.total else 0.0


def onnx_macs(model: str | Path | onnx.ModelProto, dims: dict[str, int] | None = None) -> MacCount:
    """Count the MACs of ``model`` (a path or a loaded ModelProto, left unchanged).

    Dynamic input dims are fixed from ``dims`` first (default batch=1, sequence=128, else 1, as
    ``compress bench`` feeds them), then shapes are inferred with ONNX's shape inference (data
    propagation on). Nodes left unsized are retried after folding the graph's small constant
    arithmetic (shapes computed in the graph, like "same" padding), then with ONNX Runtime's
    symbolic shape inference (which also knows contrib ops).
    """
    fixed = _with_fixed_dims(_load(model), dims)
    shapes, types, graph = _infer(fixed)
    count = _count(graph, shapes, types)
    # each fallback runs only while nodes stay unsized, and is kept only where it sizes more
    for fallback in (_fold_shape_arithmetic_, _symbolic_infer):
        if not count.unknown:
            break
        result = fallback(fixed)
        if result is not None:
            again = _count(result[2], result[0], result[1])
            count = again if len(again.unknown) < len(count.unknown) else count
    weights = {t.name for t in fixed.graph.initializer}
    count.inputs = {v.name: shapes[v.name] for v in graph.input
                    if v.name in shapes and v.name not in weights}
    return count


def count_macs(module: nn.Module, example: Any, exporter: str = "torchscript",
               path: Path | None = None) -> int:
    """MACs of ``module`` on ``example`` (a tensor, a tuple of positional tensors or named ones),
    counted on its exported ONNX graph (torch-pruning's module hooks miss Conv2d subclasses and
    functional convs). ``path``: export there (else a temp file)."""
    import tempfile

    from compress.export.torch_onnx import export_onnx

    if isinstance(example, tuple):
        example = {f"input_{i}": t for i, t in enumerate(example)}  # exported positionally
    if path is not None:
        return onnx_macs(export_onnx(module, example, path, exporter=exporter)).total
    with tempfile.TemporaryDirectory() as tmp:
        return onnx_macs(export_onnx(module, example, Path(tmp) / "model.onnx", exporter=exporter)).total


def _load(model):
    """A private copy of the graph; weight bytes are dropped (only their dims are needed)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    else:  # weights in external data files are not read at all
        copy = onnx.load(str(model), load_external_data=False)
    for t in copy.graph.initializer:
        if _prod(t.dims) > _FOLD_LIMIT and t.data_location != onnx.TensorProto.EXTERNAL:
            # shape inference serializes the model on every call: leave the bytes out, as a
            # model loaded without its external data does
            for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                      "uint64_data", "string_data"):
                t.ClearField(f)
            t.data_location = onnx.TensorProto.EXTERNAL
            t.external_data.add(key="location", value="not-loaded")
    return copy


def _with_fixed_dims(model, dims: dict[str, int] | None):
    """Fix the graph inputs' dynamic dims; drop stale intermediate and output shapes."""
    from compress.common.ort import DEFAULT_DIMS

    sizes = {**DEFAULT_DIMS, **(dims or {})}
    g = model.graph
    init = {t.name for t in g.initializer}
    for v in g.input:
        if v.name in init or not v.type.HasField("tensor_type"):
            continue
        for d in v.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.dim_value = sizes.get(d.dim_param, 1)
    # exporters write symbolic intermediate shapes ("batch", "unk__3"); infer them afresh
    del g.value_info[:]
    for v in g.output:
        if v.type.HasField("tensor_type"):
            v.type.tensor_type.ClearField("shape")
    return model


def _infer(model):
    """``(shapes, elem types, inferred graph)`` with ONNX's shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return (*_tensor_info(inferred.graph), inferred.graph)


def _fold_shape_arithmetic_(model, rounds: int = 4):
    """Fold small constant computations into initializers, then infer again.

    Once the input dims are fixed, ``Shape`` of a sized tensor is a constant, and so is the
    arithmetic on it that feeds Slice, Reshape or Expand (the dynamo exporter's
    ``Slice(token_type_ids, 0, Shape(mask)[1])``); ONNX's data propagation does not reach every
    such op. Only standard ops on tensors of at most ``_FOLD_LIMIT`` elements are evaluated, with
    ONNX's reference evaluator: shape arithmetic, never weights.
    """
    import onnx
    from onnx import numpy_helper

    g = model.graph
    for _ in range(rounds):
        shapes, _ = _tensor_info(onnx.shape_inference.infer_shapes(model, data_prop=True).graph)
        values = {t.name: numpy_helper.to_array(t) for t in g.initializer
                  if _prod(t.dims) <= _FOLD_LIMIT
                  and t.data_location != onnx.TensorProto.EXTERNAL}
        kept, folded = [], []
        for node in g.node:
            out = _fold_node(node, values, shapes, model.opset_import)
            if out is None:
                kept.append(node)
                continue
            for name, array in zip(node.output, out, strict=True):
                values[name] = array
                folded.append(numpy_helper.from_array(array, name))
        if not folded:
            break
        del g.node[:]
        g.node.extend(kept)
        g.initializer.extend(folded)
    return _infer(model)


def _fold_node(node, values: dict, shapes: dict, opsets) -> list | None:
    """The outputs of ``node`` if they are small constants, else None."""
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    if node.domain not in ("", "ai.onnx") or node.op_type in _UNFOLDABLE:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for a in node.attribute):
        return None
    if node.op_type == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        a = {x.name: x.i for x in node.attribute}
        return [np.array(shape[a.get("start", 0):a.get("end", len(shape))], np.int64)]
    inputs = [i for i in node.input if i]
    if any(i not in values for i in inputs) or (not inputs and node.op_type != "Constant"):
        return None
    feeds = {i: values[i] for i in inputs}
    graph = onnx.helper.make_graph(
        [node], "fold",
        [onnx.helper.make_tensor_value_info(
            i, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for i, v in feeds.items()],
        [onnx.helper.make_empty_tensor_value_info(o) for o in node.output])
    try:
        out = ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=opsets)).run(
            None, feeds)
    except Exception:  # noqa: BLE001 - an op the evaluator cannot run simply stays unfolded
        return None
    out = [np.asarray(x) for x in out]
    return out if all(x.size <= _FOLD_LIMIT for x in out) else None


def _symbolic_infer(model):
    """ORT's symbolic shape inference, partial results kept; None where it is unavailable.

    It folds shape arithmetic that ONNX's data propagation leaves open (Div, Cast, ceil of a
    "same" padding) and knows contrib ops. Its ``infer_shapes`` raises on the first op it cannot
    size (QGemm) and then writes a temp model into the working directory, so the loop is run
    here to keep every shape it did find and write nothing.
    """
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return None
    try:
        sym = SymbolicShapeInference(2**31 - 1, True, False, 0)
        sym._preprocess(model)
        while sym.run_:
            sym._infer_impl()
        graph = sym.out_mp_.graph
    except Exception:  # noqa: BLE001 - a fallback only: the caller keeps ONNX's answer
        return None
    return (*_tensor_info(graph), graph)


def _tensor_info(graph) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Fully known shapes and element types of every tensor of the graph."""
    shapes, types = {}, {}
    for t in graph.initializer:
        shapes[t.name], types[t.name] = list(t.dims), t.data_type
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    shapes[n.output[0]], types[n.output[0]] = list(a.t.dims), a.t.data_type
    for v in [*graph.input, *graph.value_info, *graph.output]:
        if not v.type.HasField("tensor_type"):
            continue
        tt = v.type.tensor_type
        if tt.elem_type:
            types.setdefault(v.name, tt.elem_type)
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if all(d >= 0 for d in dims):
                shapes.setdefault(v.name, dims)
    return shapes, types


def _count(graph, shapes: dict[str, list[int]], types: dict[str, int]) -> MacCount:
    producers = {o: n for n in graph.node for o in n.output}
    by_op: dict[str, int] = {}
    nodes, unknown, quantized = [], [], 0
    for i, node in enumerate(graph.node):
        rule = _RULES.get(node.op_type)
        if rule is None:
            continue
        name = node.name or f"{node.op_type}_{i}"
        macs = _node_macs(node, rule, shapes)
        if macs is None:
            unknown.append(name)
            continue
        nodes.append((name, node.op_type, macs))
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
        if node.op_type in _QUANTIZED_OPS or _dequantized(node, rule[2], producers, types):
            quantized += macs
    return MacCount(sum(by_op.values()), by_op, quantized, nodes, unknown)


def _node_macs(node, rule: tuple[str, int, int], shapes: dict[str, list[int]]) -> int | None:
    kind, ia, ib = rule
    a = _shape(node, ia, shapes)
    b = _shape(node, ib, shapes)
    attrs = {x.name: x for x in node.attribute}
    if kind == "nbits":  # B is packed; K and N are attributes
        if a is None or "K" not in attrs or "N" not in attrs:
            return None
        return _prod(a[:-1]) * attrs["K"].i * attrs["N"].i
    if a is None or b is None:
        return None
    if kind == "conv":
        y = _shape(node, 0, shapes, output=True)
        return None if y is None else _prod(y) * _prod(b[1:])
    if kind == "conv_t":  # every input pixel scatters a C_out/groups x kernel patch
        return _prod(a) * _prod(b[1:])
    if kind == "gemm":
        m, k = (a[1], a[0]) if _flag(attrs, "transA") else (a[0], a[1])
        n = b[0] if _flag(attrs, "transB") else b[1]
        return m * n * k
    if _flag(attrs, "transA") and len(a) >= 2:  # FusedMatMul
        a = [*a[:-2], a[-1], a[-2]]
    if _flag(attrs, "transB") and len(b) >= 2:
        b = [*b[:-2], b[-1], b[-2]]
    return _matmul_macs(a, b)


def _matmul_macs(a: list[int], b: list[int]) -> int | None:
    """numpy.matmul semantics: broadcast batch dims, 1-D operands promoted then squeezed."""
    if not a or not b:
        return None
    k = a[-1]
    m = a[-2] if len(a) >= 2 else 1
    n = b[-1] if len(b) >= 2 else 1
    batch_a, batch_b = a[:-2], b[:-2]
    width = max(len(batch_a), len(batch_b))
    batch_a = [1] * (width - len(batch_a)) + batch_a
    batch_b = [1] * (width - len(batch_b)) + batch_b
    return _prod([max(x, y) for x, y in zip(batch_a, batch_b, strict=True)]) * m * n * k


def _dequantized(node, weight_index: int, producers: dict, types: dict[str, int]) -> bool:
    """Whether the weight input comes (through reshapes) from DequantizeLinear of a
    low-bit integer or float8 tensor: a QDQ graph's quantized conv/matmul."""
    import onnx

    if weight_index >= len(node.input):
        return False
    name, hops = node.input[weight_index], 0
    while name in producers and producers[name].op_type in _PASS_THROUGH and hops < 8:
        name, hops = producers[name].input[0], hops + 1
    src = producers.get(name)
    if src is None or src.op_type != "DequantizeLinear":
        return False
    low_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
               onnx.TensorProto.UINT16}
    low_bit |= {getattr(onnx.TensorProto, t) for t in ("INT4", "UINT4", "FLOAT8E4M3FN",
                "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "INT2", "UINT2")
                if hasattr(onnx.TensorProto, t)}
    return types.get(src.input[0]) in low_bit


def _shape(node, index: int, shapes: dict, output: bool = False) -> list[int] | None:
    names = node.output if output else node.input
    if index >= len(names) or not names[index]:
        return None
    return shapes.get(names[index])


def _flag(attrs: dict, name: str) -> bool:
    return name in attrs and attrs[name].i != 0


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n
