"""Mobile readiness: will NNAPI / CoreML take the whole graph, and the safe fixes that help.

The node-support and partition estimates come from ONNX Runtime's own usability checker
(``onnxruntime.tools.mobile_helpers.usability_checker``), run on the model after ORT's basic
graph optimizations, as ``python -m onnxruntime.tools.check_onnx_model_mobile_usability`` does.
A partitioned graph hands tensors between the accelerator and the CPU at every boundary, and
users see NNAPI run slower than plain CPU then (FACTS.md): one partition is the goal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import GateError, InputError

# report key -> (checker config file, max tensor rank the EP takes)
EPS: dict[str, tuple[str, int]] = {
    "nnapi": ("nnapi_supported_ops.md", 999),
    "coreml": ("coreml_supported_mlprogram_ops.md", 5),
    "coreml_neuralnetwork": ("coreml_supported_neuralnetwork_ops.md", 5),
}


def _partition_info(model, ep: str) -> dict[str, Any]:
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    config, max_rank = EPS[ep]
    checker = uc._SupportedOpsChecker(Path(uc.__file__).parent / config)
    info = uc.check_partitioning(model.graph, checker, True, max_rank)
    total = max(info.num_nodes, 1)
    return {
        "nodes": info.num_nodes,
        "supported_nodes": info.num_supported_nodes,
        "fraction": round(info.num_supported_nodes / total, 4),
        "partitions": info.num_partitions,
        "partition_sizes": [len(g) for g in info.supported_groups],
        "unsupported_ops": sorted(info.unsupported_ops),
        "nodes_unsupported_dynamic_shape": info.nodes_unsupported_due_to_dynamic_input,
        "suitability": info.suitability().name if info.num_nodes else "NO",
    }


def readiness(model_path: Path) -> dict[str, Any]:
    """Per EP (``nnapi``, ``coreml`` = MLProgram, ``coreml_neuralnetwork``): supported-node
    fraction, partition count, unsupported op types, and the model's dynamic inputs."""
    import onnx
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import optimize_model

    model_path = Path(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        basic = Path(tmp) / "basic.onnx"
        optimize_model(model_path, basic)  # the ORT-format conversion applies at least this
        model = onnx.shape_inference.infer_shapes(onnx.load(str(basic)), strict_mode=True)
    dynamic, _ = uc.check_shapes(model.graph)
    report: dict[str, Any] = {ep: _partition_info(model, ep) for ep in EPS}
    report["dynamic_inputs"] = [i.name for i in dynamic]
    return report


def check_readiness(report: dict[str, Any], require: list[str],
                    max_partitions: int | None = None) -> None:
    """Raise GateError (exit 3) unless every EP in ``require`` takes all nodes (and, with
    ``max_partitions``, in at most that many partitions)."""
    problems = []
    for ep in require:
        if ep not in report:
            raise InputError(f"require: unknown execution provider {ep!r} (expected one of: "
                             f"{', '.join(EPS)})")
        r = report[ep]
        if r["supported_nodes"] < r["nodes"]:
            why = ", ".join(r["unsupported_ops"]) or "none by op type"
            dyn = r["nodes_unsupported_dynamic_shape"]
            problems.append(f"{ep} takes {r['supported_nodes']}/{r['nodes']} nodes (unsupported "
                            f"ops: {why}" + (f"; {dyn} nodes with dynamic shapes" if dyn else "")
                            + ")")
        elif max_partitions is not None and r["partitions"] > max_partitions:
            problems.append(f"{ep} splits the graph into {r['partitions']} partitions "
                            f"(max_partitions {max_partitions})")
    if problems:
        raise GateError("mobile readiness: " + "; ".join(problems))


# -- safe fixes for the mobile variant ----------------------------------------------------------

def _fix_batch(model, batch: int) -> list[str]:
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    fixes = []
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            continue
        rest = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if None in rest:
            continue  # only a dynamic batch is a known-safe fix; other axes stay as they are
        make_input_shape_fixed(model.graph, inp.name, [batch, *rest])
        fixes.append(f"fixed shape: input {inp.name!r} batch -> {batch}")
    if fixes:
        fix_output_shapes(model)
    return fixes


def _flatten_to_reshape(model) -> list[str]:
    """CoreML MLProgram rejects Flatten; Reshape to [d0*..*d(axis-1), -1] is the same op."""
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None
                       for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input]}
    fixes = []
    for i, node in enumerate(list(model.graph.node)):
        if node.op_type != "Flatten" or node.domain not in ("", "ai.onnx"):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = shapes.get(node.input[0])
        if axis < 0 and shape is not None:
            axis += len(shape)
        if axis == 1:
            target = [0, -1]  # 0 copies the batch dim, whatever it is
        elif shape is not None and axis >= 0 and None not in shape[:axis]:
            target = [int(np.prod(shape[:axis], dtype=np.int64)), -1]
        else:
            continue
        const = f"{node.output[0]}__flatten_shape"
        model.graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), const))
        model.graph.node[i].CopyFrom(helper.make_node(
            "Reshape", [node.input[0], const], list(node.output), name=node.name or const))
        fixes.append(f"op rewrite: Flatten {node.name or node.output[0]!r} -> Reshape {target}")
    return fixes


def _outputs_equal(a: Path, b: Path, feeds: dict[str, np.ndarray]) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sa = ort.InferenceSession(str(a), so, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(str(b), so, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x, y in zip(sa.run(None, feeds), sb.run(None, feeds), strict=True):
        if x.shape != y.shape:
            return float("inf")
        worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0)
    return worst


def make_mobile_variant(model_path: Path, out_path: Path, feeds: dict[str, np.ndarray],
                        fix_shapes: bool = True) -> list[str]:
    """Write the mobile variant of ``model_path`` to ``out_path``; return the fixes applied.

    Fixes: a dynamic batch fixed to the batch of ``feeds`` (one sample on a phone; NNAPI takes
    no dynamic shapes), and Flatten -> Reshape, kept only if the outputs on ``feeds`` are
    bit-equal.
    """
    import onnx

    model = onnx.load(str(model_path))
    batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
    fixes = _fix_batch(model, batch) if fix_shapes else []
    onnx.save(model, str(out_path))
    candidate = onnx.load(str(out_path))
    rewrites = _flatten_to_reshape(candidate)
    if rewrites:
        tmp = out_path.with_name(out_path.name + ".rewrite")
        onnx.checker.check_model(candidate)
        onnx.save(candidate, str(tmp))
        diff = _outputs_equal(out_path, tmp, feeds)
        if diff == 0.0:
            tmp.replace(out_path)
            fixes += [f"{r} (outputs equal on {batch} sample(s))" for r in rewrites]
        else:
            tmp.unlink()
            fixes.append(f"op rewrite Flatten -> Reshape dropped: outputs differ by {diff:g}")
    return fixes
