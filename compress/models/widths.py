"""Per-layer widths of a (pruned) model, as plain JSON, and resizing a fresh model to them.

A pruned model cannot be pickled and loaded back with ``torch.load(weights_only=True)``. Instead
the spec records every layer's shape (``record_widths``); ``build_model`` builds the architecture
as usual, ``apply_widths_`` resizes its layers, and the state_dict loads into it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.errors import InputError

# Hugging Face attention modules keep their head geometry in plain attributes that forward() reads.
HEAD_ATTRS = ("num_attention_heads", "attention_head_size", "all_head_size")


def record_widths(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Shape-defining attributes of every resizable module, keyed by module name."""
    widths: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        entry = _describe(m)
        if entry:
            widths[name] = entry
    return widths


def _describe(m: nn.Module) -> dict[str, Any] | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return {"type": "conv", "in": m.in_channels, "out": m.out_channels, "groups": m.groups}
    if isinstance(m, nn.Linear):
        return {"type": "linear", "in": m.in_features, "out": m.out_features}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return {"type": "batchnorm", "features": m.num_features}
    if isinstance(m, nn.LayerNorm):
        return {"type": "layernorm", "shape": list(m.normalized_shape)}
    if isinstance(m, nn.GroupNorm):
        return {"type": "groupnorm", "channels": m.num_channels, "groups": m.num_groups}
    if isinstance(m, nn.Embedding):
        return {"type": "embedding", "num": m.num_embeddings, "dim": m.embedding_dim}
    if all(isinstance(getattr(m, a, None), int) for a in HEAD_ATTRS):
        return {"type": "attention", **{a: getattr(m, a) for a in HEAD_ATTRS}}
    return None


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """Hugging Face self-attention: each q/k/v linear mapped to its module's head count."""
    heads = {}
    for m in model.modules():
        qkv = [getattr(m, p, None) for p in ("query", "key", "value")]
        if all(hasattr(m, a) for a in HEAD_ATTRS) and all(isinstance(q, nn.Linear) for q in qkv):
            heads.update(dict.fromkeys(qkv, m.num_attention_heads))
    return heads


def sync_attention_heads_(model: nn.Module, num_heads: dict[nn.Module, int]) -> nn.Module:
    """After the q/k/v linears were pruned, make each attention module's head bookkeeping follow."""
    for m in model.modules():
        q = getattr(m, "query", None)
        if q is not None and q in num_heads:
            m.num_attention_heads = num_heads[q]
            m.attention_head_size = q.out_features // m.num_attention_heads
            m.all_head_size = q.out_features
    return model


def apply_widths_(model: nn.Module, widths: dict[str, dict[str, Any]]) -> nn.Module:
    """Resize ``model``'s layers in place to ``widths``; weights become uninitialized placeholders.

    Load a state_dict afterwards. A name that is missing, or a layer of another type, means the
    widths belong to another architecture: ``InputError`` names the first such layer.
    """
    modules = dict(model.named_modules())
    for name, w in widths.items():
        m = modules.get(name)
        if m is None:
            raise InputError(f"spec.widths: names layer {name!r}, which the model does not have")
        got = _describe(m)
        if got is None or got["type"] != w["type"]:
            kind = got["type"] if got else type(m).__name__
            raise InputError(f"spec.widths: gives layer {name!r} as {w['type']}, the model has {kind}")
        if got != w:
            _RESIZE[w["type"]](m, w)
    return model


def _new(param: torch.Tensor | None, *shape: int) -> nn.Parameter | None:
    if param is None:
        return None
    return nn.Parameter(param.new_empty(shape), requires_grad=param.requires_grad)


def _resize_conv(m: nn.modules.conv._ConvNd, w: dict) -> None:
    m.in_channels, m.out_channels, m.groups = w["in"], w["out"], w["groups"]
    k = tuple(m.weight.shape[2:])
    if m.transposed:  # weight is (in, out / groups, *k)
        m.weight = _new(m.weight, w["in"], w["out"] // w["groups"], *k)
    else:
        m.weight = _new(m.weight, w["out"], w["in"] // w["groups"], *k)
    m.bias = _new(m.bias, w["out"])


def _resize_linear(m: nn.Linear, w: dict) -> None:
    m.in_features, m.out_features = w["in"], w["out"]
    m.weight = _new(m.weight, w["out"], w["in"])
    m.bias = _new(m.bias, w["out"])


def _resize_batchnorm(m: nn.modules.batchnorm._BatchNorm, w: dict) -> None:
    n = m.num_features = w["features"]
    m.weight, m.bias = _new(m.weight, n), _new(m.bias, n)
    if m.running_mean is not None:
        m.running_mean = torch.zeros(n, dtype=m.running_mean.dtype)
        m.running_var = torch.ones(n, dtype=m.running_var.dtype)


def _resize_layernorm(m: nn.LayerNorm, w: dict) -> None:
    m.normalized_shape = tuple(w["shape"])
    m.weight, m.bias = _new(m.weight, *w["shape"]), _new(m.bias, *w["shape"])


def _resize_groupnorm(m: nn.GroupNorm, w: dict) -> None:
    m.num_channels, m.num_groups = w["channels"], w["groups"]
    m.weight, m.bias = _new(m.weight, w["channels"]), _new(m.bias, w["channels"])


def _resize_embedding(m: nn.Embedding, w: dict) -> None:
    m.num_embeddings, m.embedding_dim = w["num"], w["dim"]
    m.weight = _new(m.weight, w["num"], w["dim"])


def _resize_attention(m: nn.Module, w: dict) -> None:
    for a in HEAD_ATTRS:
        setattr(m, a, w[a])


_RESIZE = {
    "conv": _resize_conv,
    "linear": _resize_linear,
    "batchnorm": _resize_batchnorm,
    "layernorm": _resize_layernorm,
    "groupnorm": _resize_groupnorm,
    "embedding": _resize_embedding,
    "attention": _resize_attention,
}
