"""ONNX export with the checks every artifact gets: checker full_check and parity with PyTorch."""

from __future__ import annotations

import inspect
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from compress.runtime.files import atomic_write

if TYPE_CHECKING:
    import onnx

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    opset: int = 18,
    dynamic_batch: bool = False,
    exporter: str = "dynamo",
) -> Path:
    """Export ``model`` to one ONNX file (weights inside, debug metadata stripped), checked with
    ``full_check``.

    Fixed shapes are the default: mobile runtimes (NNAPI, CoreML) take whole graphs only then.
    """
    import onnx

    model = model.eval().cpu()
    example = example.cpu()
    dynamo = exporter == "dynamo"
    kwargs: dict = {}
    if dynamic_batch:
        if dynamo:
            arg = next(iter(inspect.signature(model.forward).parameters))
            kwargs["dynamic_shapes"] = {arg: {0: torch.export.Dim("batch", min=1, max=4096)}}
        else:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}

    # The dynamo exporter logs a warning per missing torchvision op; none apply here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=dynamo,
                external_data=False,
                verbose=False,
                **({"report": False} if dynamo else {}),
                **kwargs,
            )
        proto = onnx.load(str(tmp))
        strip_debug_metadata_(proto)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def strip_debug_metadata_(model: onnx.ModelProto) -> int:
    """Drop every node's metadata_props, in place, subgraphs and functions included.

    The dynamo exporter records fx node names and stack traces there: local file paths that no
    artifact should ship, and more than half the bytes of a small model. Nothing reads them at run
    time. Graph- and value-level metadata (export signature, original names) carry no paths and stay.

    Returns:
        How many nodes had metadata.
    """
    def nodes(graph: onnx.GraphProto):
        for node in graph.node:
            yield node
            for attr in node.attribute:
                for sub in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
                    yield from nodes(sub)

    cleaned = 0
    for node in (*nodes(model.graph), *(n for f in model.functions for n in f.node)):
        cleaned += bool(node.metadata_props)
        del node.metadata_props[:]
    return cleaned


@dataclass
class Parity:
    max_abs_diff: float
    top1_agreement: float
    samples: int


def onnx_parity(
    model: nn.Module, onnx_path: str | Path, inputs: np.ndarray, batch_size: int | None = None
) -> Parity:
    """Compare ONNX Runtime's outputs with PyTorch's on real inputs."""
    from compress.bench.latency import make_session

    sess = make_session(onnx_path, threads=1, opt_level="basic")
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    bs = fixed if isinstance(fixed, int) else (batch_size or 64)
    model = model.eval().cpu()
    diffs, agree, n = [], 0, 0
    with torch.no_grad():
        for i in range(0, len(inputs) - len(inputs) % bs if isinstance(fixed, int) else len(inputs), bs):
            x = inputs[i : i + bs].astype(np.float32)
            ref = model(torch.from_numpy(x)).numpy()
            got = sess.run(None, {name: x})[0]
            diffs.append(float(np.abs(ref - got).max()))
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            n += len(x)
    return Parity(max(diffs) if diffs else 0.0, agree / max(n, 1), n)
