"""Depth pruning of a decoder LM: how much each block changes its input, and a copy that keeps
only some blocks.

The importance of block ``i`` is the angular distance between its input and output hidden
states, ``arccos(cos(h_in, h_out)) / pi`` per token, averaged over the real tokens of the
calibration text (``attention_mask`` 1): 0 for a block that leaves the residual stream's direction
as it was, so the blocks of lowest distance are the first to drop.

Public API::

    angular_distances(model, input_ids, attention_mask=None, batch_size=4) -> list[float]
    least_important(distances, n) -> list[int]      # the n blocks of lowest distance, ascending
    keep_layers(model, keep, where="keep") -> model # a depth-pruned deep copy (Llama-style)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from compress.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn


def decoder_layers(model: nn.Module):
    """The ModuleList of decoder blocks of a Llama-style ``*ForCausalLM`` (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise InputError(f"{type(model).__name__}: no decoder blocks at model.model.layers "
                         "(a Llama-style causal LM is expected)")
    return layers


def _angles(h_in: torch.Tensor, h_out: torch.Tensor) -> torch.Tensor:
    import torch

    cos = torch.nn.functional.cosine_similarity(h_in.double(), h_out.double(), dim=-1)
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def angular_distances(model: nn.Module, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None = None,
                      batch_size: int = 4) -> list[float]:
    """Each block's mean angular distance between input and output over the real tokens of
    ``input_ids`` [N, S] (rows run ``batch_size`` at a time)."""
    import torch

    layers = decoder_layers(model)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    sums = [0.0] * len(layers)
    seen: dict[int, torch.Tensor] = {}

    def hook(i):
        def record(module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            seen[i] = _angles(h_in, h_out)
        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            for start in range(0, len(input_ids), batch_size):
                ids = input_ids[start:start + batch_size]
                mask = attention_mask[start:start + batch_size]
                model(input_ids=ids, attention_mask=mask, use_cache=False)
                for i in range(len(layers)):
                    sums[i] += float((seen[i] * mask).sum())
    finally:
        for h in handles:
            h.remove()
    tokens = float(attention_mask.sum())
    return [s / tokens for s in sums]


def least_important(distances: Sequence[float], n: int) -> list[int]:
    """The ``n`` blocks of lowest angular distance, lowest first."""
    return sorted(range(len(distances)), key=lambda i: (distances[i], i))[:n]


def keep_layers(model: nn.Module, keep: Sequence[int], where: str = "keep") -> nn.Module:
    """A deep copy of ``model`` with only the blocks ``keep`` (in the model's order). The config's
    ``num_hidden_layers`` (and ``layer_types`` where present) follow, and each attention's
    ``layer_idx`` is renumbered so that the KV cache indexes the kept blocks 0..len-1."""
    from torch import nn

    n = len(decoder_layers(model))
    for i in keep:
        if not 0 <= i < n:
            raise InputError(f"{where}: layer {i} is out of range (the model has {n} layers, "
                             f"0-{n - 1})")
    if not keep or len(set(keep)) != len(keep):
        raise InputError(f"{where}: give distinct layer indices, at least one (got {list(keep)})")
    order = sorted(keep)
    student = copy.deepcopy(model)
    student.model.layers = nn.ModuleList([student.model.layers[i] for i in order])
    for j, layer in enumerate(student.model.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = j
    cfg = student.config
    cfg.num_hidden_layers = len(order)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in order]
    return student
