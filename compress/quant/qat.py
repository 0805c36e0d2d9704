"""Quantization-aware training with torchao PT2E, annotated so ONNX Runtime fuses the result.

The stock PT2E quantizers leave the conv -> residual-add edges in float. Exported to ONNX, ORT then
fuses only part of the graph and the int8 model runs slower than fp32 (FACTS.md). ``OrtQuantizer``
annotates exactly what ORT's QDQ fusions want: the input, weight and (folded) bias of every
conv / linear, the output of each conv(+bn)(+relu) chain, and both inputs and the output of
residual adds (taken after a following ReLU, which ORT folds into the quantize step).
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ANNOTATION = "quantization_annotation"


@dataclass(frozen=True)
class QATScheme:
    """Integer types of the exported model: per-channel symmetric weights, per-tensor activations."""

    activation_dtype: str = "uint8"  # "uint8" (x86, NNAPI) or "int8" (XNNPACK-style arm64)
    weight_bits: int = 8  # 7 keeps U8S8 products from saturating on x86 without VNNI


def _aten_sets() -> dict[str, set]:
    a = torch.ops.aten
    return {
        "conv": {a.conv1d.default, a.conv2d.default},
        "linear": {a.linear.default},
        "bn": {a.batch_norm.default, a._native_batch_norm_legit.default,
               a._native_batch_norm_legit_no_training.default},
        "relu": {a.relu.default, a.relu_.default},
        "add": {a.add.Tensor, a.add_.Tensor},
    }


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _bias_qparams(observers: list) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 bias scale = activation scale x weight scale (what QLinearConv / QGemm expect)."""
    act, weight = observers
    s_act, _ = act.calculate_qparams()
    s_w, _ = weight.calculate_qparams()
    scale = (s_act * s_w).float()
    return scale, torch.zeros_like(scale, dtype=torch.int32)


def _specs(scheme: QATScheme):
    """Activation (per-tensor, uint8 or int8) and weight (per-channel symmetric) fake-quant specs."""
    from torchao.quantization.pt2e import (
        FusedMovingAvgObsFakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    signed = scheme.activation_dtype == "int8"
    act = QuantizationSpec(
        torch.int8 if signed else torch.uint8,
        FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, eps=2**-12),
        -128 if signed else 0,
        127 if signed else 255,
        torch.per_tensor_affine,
    )
    wmax = 2 ** (scheme.weight_bits - 1) - 1
    weight = QuantizationSpec(
        torch.int8,
        FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, eps=2**-12
        ),
        -wmax,
        wmax,
        torch.per_channel_symmetric,
        ch_axis=0,
    )
    return act, weight


def _mark(node: torch.fx.Node, inputs=None, output=None) -> None:
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    ann = node.meta.get(ANNOTATION) or QuantizationAnnotation(_annotated=True)
    ann.input_qspec_map.update(inputs or {})
    if output is not None:
        ann.output_qspec = output
    node.meta[ANNOTATION] = ann


def _chain_end(node: torch.fx.Node, ops: dict) -> torch.fx.Node:
    """The last node of conv -> (bn -> getitem) -> (relu): where ORT puts the Q."""
    end, user = node, _only_user(node)
    if user is not None and user.target in ops["bn"]:
        end = user
        nxt = _only_user(end)
        if nxt is not None and nxt.target is operator.getitem:
            end = nxt
        user = _only_user(end)
    if user is not None and user.target in ops["relu"]:
        end = user
    return end


def _annotate(gm: torch.fx.GraphModule, ops: dict, act, weight) -> None:
    """Conv/linear inputs, weights and int32 bias; conv chain outputs; both inputs and the output
    of residual adds (the edges stock quantizers leave in float)."""
    from torchao.quantization.pt2e.quantizer import DerivedQuantizationSpec

    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        if n.target in ops["conv"] or n.target in ops["linear"]:
            x, w = n.args[0], n.args[1]
            inputs = {x: act, w: weight}
            if len(n.args) > 2 and isinstance(n.args[2], torch.fx.Node):
                inputs[n.args[2]] = DerivedQuantizationSpec(
                    [(x, n), (w, n)], _bias_qparams, torch.int32, -(2**31), 2**31 - 1,
                    torch.per_channel_symmetric, ch_axis=0,
                )
            _mark(n, inputs)
            if n.target in ops["conv"]:
                _mark(_chain_end(n, ops), output=act)
        elif n.target in ops["add"] and all(isinstance(a, torch.fx.Node) for a in n.args[:2]):
            _mark(n, {n.args[0]: act, n.args[1]: act})
            user = _only_user(n)
            _mark(user if user is not None and user.target in ops["relu"] else n, output=act)


def make_ort_quantizer(scheme: QATScheme = QATScheme()):
    """A PT2E ``Quantizer`` whose annotations become fused QLinearConv / QLinearAdd / QGemm in ORT."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    act, weight = _specs(scheme)
    ops = _aten_sets()

    class OrtQuantizer(Quantizer):
        def annotate(self, gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
            _annotate(gm, ops, act, weight)
            return gm

        def validate(self, gm: torch.fx.GraphModule) -> None:
            return None

    return OrtQuantizer()


class _Trainable(nn.Module):
    """Lets the shared training loop call ``train()`` / ``eval()`` on an exported graph."""

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gm(x)

    def train(self, mode: bool = True) -> _Trainable:
        from torchao.quantization.pt2e import (
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.gm)
        self.training = mode
        return self


def prepare_qat(model: nn.Module, example: torch.Tensor, scheme: QATScheme = QATScheme(),
                fold_bn: bool = True) -> nn.Module:
    """Capture ``model`` with ``torch.export`` (dynamic batch) and insert fake-quant modules.

    ``fold_bn`` folds batch norm into the conv weights first (frozen statistics, the usual choice
    for fine-tuning a trained model). Otherwise torchao trains conv+bn jointly and folds at
    convert time, which costs about a minute of pattern matching on CPU.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    model = model.cpu()
    arg = next(iter(inspect.signature(model.forward).parameters))
    if fold_bn:
        from torch.fx.experimental.optimization import fuse

        model = fuse(model.eval())
    model.train()
    if example.shape[0] < 2:  # batch norm in training mode needs more than one sample
        example = example.repeat(2, *([1] * (example.dim() - 1)))
    dims = {arg: {0: torch.export.Dim("batch", min=2, max=65536)}}
    gm = torch.export.export(model, (example,), dynamic_shapes=dims).module()
    return _Trainable(prepare_qat_pt2e(gm, make_ort_quantizer(scheme)))


def convert_qat(prepared: nn.Module) -> nn.Module:
    """Fold batch norm and turn fake-quant into quantize/dequantize ops (the reference int8 graph)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    gm = prepared.gm if isinstance(prepared, _Trainable) else prepared
    gm = gm.cpu()
    move_exported_model_to_eval(gm)
    converted = convert_pt2e(gm)
    # wrapped so export_onnx's .eval() maps to the PT2E helper
    return _Trainable(converted).eval()


def export_qdq_onnx(converted: nn.Module, example: torch.Tensor, path: Path, opset: int) -> Path:
    """Export the converted graph to one QDQ ONNX file with the dynamo exporter (checked).

    ``export_onnx`` strips the exporter's per-node debug metadata (stack traces with local paths),
    more than half the file of a small model.
    """
    from compress.export.torch_onnx import export_onnx

    return export_onnx(converted, example.cpu(), path, opset=opset, exporter="dynamo")
