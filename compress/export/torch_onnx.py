"""ONNX export with the check every artifact gets: onnx.checker full_check (parity with PyTorch:
``compress.export.parity``)."""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.common.files import atomic_write

if TYPE_CHECKING:
    import onnx

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(
    model: nn.Module,
    example: torch.Tensor | dict[str, torch.Tensor],
    path: str | Path,
    opset: int = 18,
    dynamic_batch: bool = False,
    exporter: str = "dynamo",
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Export ``model`` to one ONNX file (weights inside, debug metadata stripped), checked with
    ``full_check``.

    ``example`` is a dict of named inputs, passed positionally in its order (a bare tensor is the
    input ``input``). Fixed shapes are the default: mobile runtimes (NNAPI, CoreML) take whole
    graphs only then. ``dynamic_axes`` names extra dynamic axes per input (e.g. a sequence axis).
    """
    import onnx

    model = model.eval().cpu()
    named = example if isinstance(example, dict) else {INPUT_NAME: example}
    named = {k: v.cpu() for k, v in named.items()}
    if _is_transformers_model(model) and exporter != "dynamo":
        model = _ByName(model, tuple(named)).eval()  # the exporter restores the wrapper's mode
    axes = {k: dict(v) for k, v in (dynamic_axes or {}).items()}
    if dynamic_batch:
        for k in named:
            axes.setdefault(k, {})[0] = "batch"
    kwargs = _dynamic_kwargs(model, named, axes, output_names, exporter == "dynamo")
    # The dynamo exporter logs a warning per missing torchvision op; none apply here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, tuple(named.values()), str(tmp), input_names=list(named),
                output_names=list(output_names), opset_version=opset, dynamo=exporter == "dynamo",
                external_data=False, verbose=False,
                **({"report": False} if exporter == "dynamo" else {}), **kwargs,
            )
        proto = onnx.load(str(tmp))
        strip_debug_metadata_(proto)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def _is_transformers_model(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.")


class _ByName(torch.nn.Module):
    """A transformers model called with its inputs by name. The TorchScript exporter fills a
    forward's parameters by position from its signature, and transformers 5 adds ``use_cache``
    as a keyword too: the same argument twice. Named inputs leave every other parameter alone."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor):
        return self.model(**dict(zip(self.names, inputs, strict=True)))


def _dynamic_kwargs(model: nn.Module, named: dict, axes: dict, output_names, dynamo: bool) -> dict:
    if not axes:
        return {}
    if not dynamo:
        out_axes = {o: {0: "batch"} for o in output_names} if any(0 in a for a in axes.values()) else {}
        return {"dynamic_axes": {**axes, **out_axes}}
    params = list(inspect.signature(model.forward).parameters)
    dims: dict[str, torch.export.Dim] = {}
    shapes = {}
    for i, k in enumerate(named):
        spec = {}
        for ax, name in axes.get(k, {}).items():
            dims.setdefault(name, torch.export.Dim(name, min=1, max=4096))
            spec[ax] = dims[name]
        shapes[params[i] if i < len(params) else k] = spec or None
    return {"dynamic_shapes": shapes}


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
