"""The model in ONNX Runtime's own terms, as a bundle ships it: conversion to ORT format (with the
operator config for a reduced build), the ops an ORT-format graph holds, an ONNX model's inputs
and outputs, and running a model the way the runner and an app call it (``.onnx`` or ``.ort``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import StageError

ORT_CONVERTER = "onnxruntime.tools.convert_onnx_models_to_ort"
OPS_CONFIG = "required_operators_and_types.config"


def convert_to_ort(onnx_path: Path, out_dir: Path, platform: str = "arm",
                   style: str = "runtime", level: str = "all") -> tuple[Path, Path]:
    """Convert with ONNX Runtime's own tool; returns ``(out_dir/model.ort, ops config)``.

    Runs ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` in a child process (the
    tool reads its optimization level from the environment and prints progress).
    """
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ort-") as tmp:
        src = Path(tmp) / "src" / "model.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)
        env = {**os.environ, "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL": level}
        cmd = [sys.executable, "-m", ORT_CONVERTER, "--optimization_style", style.capitalize(),
               "--target_platform", platform, "--enable_type_reduction",
               "--output_dir", str(Path(tmp) / "out"), str(src)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            raise StageError(f"ORT-format conversion of {onnx_path} failed: "
                             f"{tail[-1] if tail else 'exit ' + str(proc.returncode)}", "package")
        out = Path(tmp) / "out"
        orts, configs = sorted(out.glob("*.ort")), sorted(out.glob("*.config"))
        if len(orts) != 1 or len(configs) != 1:
            raise StageError(f"ORT-format conversion wrote {[p.name for p in out.iterdir()]}, "
                             "expected one .ort and one .config", "package")
        ort_path, cfg_path = out_dir / "model.ort", out_dir / OPS_CONFIG
        os.replace(orts[0], ort_path)
        # the tool names the temp files it read; name the shipped one instead
        lines = [ln for ln in configs[0].read_text().splitlines() if not ln.startswith("# - ")]
        head = [ln for ln in lines if ln.startswith("#")]
        body = [ln for ln in lines if not ln.startswith("#")]
        cfg_path.write_text("\n".join([*head, "# - model.ort", *body]) + "\n")
    return ort_path, cfg_path


def ort_graph_ops(ort_path: Path) -> list[str]:
    """``domain:op_type`` of every node in an ORT-format model's main graph (sorted, unique);
    the saved runtime optimizations are not nodes and do not count."""
    import onnxruntime.tools.ort_format_model  # noqa: F401  (puts ort_flatbuffers_py on the path)
    import ort_flatbuffers_py.fbs as fbs

    buf = bytearray(Path(ort_path).read_bytes())
    graph = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0).Model().Graph()
    ops = set()
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        ops.add(f"{(node.Domain() or b'').decode() or 'ai.onnx'}:{node.OpType().decode()}")
    return sorted(ops)


def model_io(model_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX model: name, shape (a str for a dynamic dim), dtype."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def describe(v) -> dict[str, Any]:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in t.shape.dim]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        return {"name": v.name, "shape": dims, "dtype": dtype}

    return {"inputs": [describe(v) for v in model.graph.input if v.name not in inits],
            "outputs": [describe(v) for v in model.graph.output]}


def run_model(model_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs by name, one call per sample (or per fixed batch), as the runner and an app call
    the model; works for .onnx and .ort files."""
    from compress.common.ort import make_session, run_batched

    sess = make_session(model_path, 1, "all")
    return dict(zip([o.name for o in sess.get_outputs()], run_batched(sess, feeds), strict=True))
