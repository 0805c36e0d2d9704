"""Width pruning of a decoder LM's feed-forward blocks: which intermediate channels matter, and a
copy that keeps only the most important ones.

The importance of channel ``c`` of block ``i``'s MLP is the sum over the calibration tokens of
``|act(gate(x)) * up(x)|[c]``, the activation that ``down_proj`` reads: a channel that never
fires adds nothing to the residual stream. Every block keeps the same number of channels
(``ffn_width``: the kept fraction of ``intermediate_size`` rounded to a multiple of
``round_to``, so that the config's one ``intermediate_size`` still describes every block and
matmul kernels get friendly shapes); which channels each block keeps is its own top by
importance. torch-pruning's dependency graph removes them: the group of ``gate_proj``'s output
channels carries ``up_proj``'s outputs and ``down_proj``'s inputs with it.

Attention heads are not pruned here: the KV-cache layout and GQA grouping stay the teacher's.

Public API::

    ffn_width(intermediate, ffn, round_to=32) -> int     # the kept width of every block
    ffn_importance(model, input_ids, batch_size=4) -> list[Tensor]   # per block, [intermediate]
    top_channels(scores, width) -> list[list[int]]       # per block, ascending
    prune_ffn_(model, keep) -> model                     # in place; config.intermediate_size follows
    shrink_ffn_(model, width) -> model                   # the shapes only, before a state_dict loads
    prune_width_(model, input_ids, ffn, round_to=32) -> WidthChoice
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from compress.errors import InputError
from compress.models.layer_depth import decoder_layers

if TYPE_CHECKING:
    import torch
    from torch import nn

MLP_PARTS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class WidthChoice:
    """What a width pruning did: the FFN width before and after, and the parameter counts."""

    intermediate_before: int
    intermediate_after: int
    params_before: int
    params_after: int
    kept: list[list[int]]  # per block, the channels kept (ascending)


def ffn_width(intermediate: int, ffn: float, round_to: int = 32) -> int:
    """``ffn * intermediate`` to the nearest multiple of ``round_to`` (halves up), at least
    ``round_to`` and at most ``intermediate``."""
    if not 0 < ffn <= 1:
        raise InputError(f"width.ffn: must be in (0, 1] (got {ffn})")
    if round_to <= 0:
        raise InputError(f"width.round_to: must be > 0 (got {round_to})")
    units = math.floor(ffn * intermediate / round_to + 0.5)
    return min(intermediate, max(round_to, units * round_to))


def _mlps(model: nn.Module) -> list[nn.Module]:
    mlps = []
    for i, layer in enumerate(decoder_layers(model)):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not all(hasattr(mlp, p) for p in MLP_PARTS):
            raise InputError(f"{type(model).__name__}: block {i} has no gated MLP "
                             f"({', '.join(MLP_PARTS)}); width pruning needs a Llama-style one")
        mlps.append(mlp)
    return mlps


def ffn_importance(model: nn.Module, input_ids: torch.Tensor,
                   batch_size: int = 4) -> list[torch.Tensor]:
    """Each block's sum over every token of ``input_ids`` [N, S] of the absolute intermediate
    activation (the input of ``down_proj``), one float64 score per channel."""
    import torch

    mlps = _mlps(model)
    sums = [torch.zeros(m.down_proj.in_features, dtype=torch.float64) for m in mlps]

    def hook(i):
        def record(module, args):
            a = args[0].detach().abs().double()
            sums[i] += a.reshape(-1, a.shape[-1]).sum(0).cpu()
        return record

    handles = [m.down_proj.register_forward_pre_hook(hook(i)) for i, m in enumerate(mlps)]
    try:
        with torch.no_grad():
            for start in range(0, len(input_ids), batch_size):
                model(input_ids=input_ids[start:start + batch_size], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return sums


def top_channels(scores: Sequence[torch.Tensor], width: int) -> list[list[int]]:
    """Per block, the ``width`` channels of highest score (ties: the lower index), ascending."""
    out = []
    for s in scores:
        order = sorted(range(len(s)), key=lambda c: (-float(s[c]), c))
        out.append(sorted(order[:width]))
    return out


def prune_ffn_(model: nn.Module, keep: Sequence[Sequence[int]]) -> nn.Module:
    """Keep only the channels ``keep[i]`` of block ``i``'s MLP (the same count in every block),
    through torch-pruning's dependency graph; ``config.intermediate_size`` follows."""
    import torch
    import torch_pruning as tp

    mlps = _mlps(model)
    widths = {len(k) for k in keep}
    if len(keep) != len(mlps) or len(widths) != 1:
        raise InputError(f"width: give one channel list per block ({len(mlps)}), all of one "
                         f"length (got lengths {[len(k) for k in keep]})")
    for mlp, kept in zip(mlps, keep, strict=True):
        n = mlp.gate_proj.out_features
        kept_set = set(kept)
        if len(kept_set) != len(kept) or not all(0 <= c < n for c in kept_set):
            raise InputError(f"width: channels must be distinct and in 0-{n - 1}")
        drop = [c for c in range(n) if c not in kept_set]
        if not drop:
            continue
        weight = mlp.gate_proj.weight
        example = torch.zeros(1, 1, mlp.gate_proj.in_features, dtype=weight.dtype,
                              device=weight.device)
        graph = tp.DependencyGraph().build_dependency(mlp, example_inputs=example)
        graph.get_pruning_group(mlp.gate_proj, tp.prune_linear_out_channels, idxs=drop).prune()
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = len(kept)
    model.config.intermediate_size = widths.pop()
    return model


def shrink_ffn_(model: nn.Module, width: int) -> nn.Module:
    """Give every block's MLP ``width`` intermediate channels (the first ones): the shapes of a
    width-pruned student, rebuilt before its saved weights load."""
    n = _mlps(model)[0].gate_proj.out_features
    if not 0 < width <= n:
        raise InputError(f"width: {width} channels is out of range (the model has {n})")
    return prune_ffn_(model, [list(range(width))] * len(decoder_layers(model)))


def prune_width_(model: nn.Module, input_ids: torch.Tensor, ffn: float,
                 round_to: int = 32) -> WidthChoice:
    """Measure the FFN importance on ``input_ids`` and keep, in every block, its
    ``ffn_width(intermediate, ffn, round_to)`` most important channels (in place)."""
    before = model.config.intermediate_size
    params_before = sum(p.numel() for p in model.parameters())
    width = ffn_width(before, ffn, round_to)
    keep = top_channels(ffn_importance(model, input_ids), width)
    prune_ffn_(model, keep)
    return WidthChoice(before, width, params_before, sum(p.numel() for p in model.parameters()),
                       keep)
