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

Attention heads go by KV group (``heads``): a key/value head and the query heads that share it
are kept or dropped together, so every block keeps the grouped-query ratio and one
``num_key_value_heads`` for the KV cache. A group's importance is the summed ``|o_proj input|``
of its query heads. torch-pruning cannot trace the head reshapes of a grouped-query attention
into index groups, so its pruning functions are called on the four projections with the
channels of the chosen heads.

Public API::

    ffn_width(intermediate, ffn, round_to=32) -> int     # the kept width of every block
    ffn_importance(model, input_ids, batch_size=4) -> list[Tensor]   # per block, [intermediate]
    top_channels(scores, width) -> list[list[int]]       # per block, ascending
    prune_ffn_(model, keep) -> model                     # in place; config.intermediate_size follows
    shrink_ffn_(model, width) -> model                   # the shapes only, before a state_dict loads
    kv_group_count(groups, heads) -> int                 # the kept KV groups of every block
    kv_group_importance(model, input_ids, batch_size=4) -> list[Tensor]  # per block, [kv heads]
    prune_kv_groups_(model, keep) -> model               # in place; the config's head counts follow
    shrink_kv_groups_(model, groups) -> model            # the shapes only, before a state_dict loads
    prune_width_(model, input_ids, ffn=None, round_to=32, heads=None) -> WidthChoice
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    kept: list[list[int]]  # per block, the FFN channels kept (ascending)
    kv_heads_before: int
    kv_heads_after: int
    kept_groups: list[list[int]]  # per block, the KV groups kept (ascending)


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


def _input_sums(model: nn.Module, layers: Sequence[nn.Module], size: int,
                input_ids: torch.Tensor, batch_size: int,
                fold: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Run ``input_ids`` [N, S] through ``model`` in batches and, for each of ``layers``, add up
    ``fold(|its input|)`` (``size`` float64 scores, on the CPU) over every batch."""
    import torch

    sums = [torch.zeros(size, dtype=torch.float64) for _ in layers]

    def hook(i):
        def record(module, args):
            sums[i] += fold(args[0].detach().abs().double()).cpu()
        return record

    handles = [layer.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            for start in range(0, len(input_ids), batch_size):
                model(input_ids=input_ids[start:start + batch_size], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return sums


def ffn_importance(model: nn.Module, input_ids: torch.Tensor,
                   batch_size: int = 4) -> list[torch.Tensor]:
    """Each block's sum over every token of ``input_ids`` [N, S] of the absolute intermediate
    activation (the input of ``down_proj``), one float64 score per channel."""
    downs = [m.down_proj for m in _mlps(model)]
    return _input_sums(model, downs, model.config.intermediate_size, input_ids, batch_size,
                       lambda a: a.reshape(-1, a.shape[-1]).sum(0))


def top_channels(scores: Sequence[torch.Tensor], width: int) -> list[list[int]]:
    """Per block, the ``width`` indices (channels or KV groups) of highest score (ties: the
    lower index), ascending."""
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


def _attentions(model: nn.Module) -> list[nn.Module]:
    out = []
    for i, layer in enumerate(decoder_layers(model)):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj",
                                                               "o_proj", "head_dim")):
            raise InputError(f"{type(model).__name__}: block {i} has no Llama-style attention "
                             "(q_proj, k_proj, v_proj, o_proj); head pruning needs one")
        out.append(attn)
    return out


def _geometry(model: nn.Module) -> tuple[int, int, int]:
    """(KV heads, query heads per KV head, head dim) from the config."""
    cfg = model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return kv, heads // kv, head_dim


def kv_group_count(groups: int, heads: float) -> int:
    """``heads * groups`` to the nearest whole KV group (halves up), between 1 and ``groups``."""
    if not 0 < heads <= 1:
        raise InputError(f"width.heads: must be in (0, 1] (got {heads})")
    return min(groups, max(1, math.floor(heads * groups + 0.5)))


def kv_group_importance(model: nn.Module, input_ids: torch.Tensor,
                        batch_size: int = 4) -> list[torch.Tensor]:
    """Each block's sum over every token of ``input_ids`` of ``|o_proj input|`` over the
    channels of each KV group's query heads, one float64 score per KV head."""
    kv, group, head_dim = _geometry(model)
    outs = [a.o_proj for a in _attentions(model)]
    return _input_sums(model, outs, kv, input_ids, batch_size,
                       lambda a: a.reshape(-1, kv, group * head_dim).sum((0, 2)))


def prune_kv_groups_(model: nn.Module, keep: Sequence[Sequence[int]]) -> nn.Module:
    """Keep only the KV groups ``keep[i]`` of block ``i`` (the same count in every block): their
    key and value heads, their query heads and the matching ``o_proj`` inputs. The config's
    ``num_attention_heads`` and ``num_key_value_heads`` follow; ``head_dim`` is written out so
    that nothing derives it from the hidden size again."""
    import torch_pruning as tp

    attns = _attentions(model)
    kv, group, head_dim = _geometry(model)
    counts = {len(k) for k in keep}
    if len(keep) != len(attns) or len(counts) != 1:
        raise InputError(f"width: give one KV-group list per block ({len(attns)}), all of one "
                         f"length (got lengths {[len(k) for k in keep]})")
    for attn, kept in zip(attns, keep, strict=True):
        kept_set = set(kept)
        if len(kept_set) != len(kept) or not all(0 <= g < kv for g in kept_set) or not kept:
            raise InputError(f"width: KV groups must be distinct and in 0-{kv - 1}")
        dropped = [g for g in range(kv) if g not in kept_set]
        if not dropped:
            continue
        kv_idx = [g * head_dim + d for g in dropped for d in range(head_dim)]
        q_idx = [(g * group + h) * head_dim + d for g in dropped for h in range(group)
                 for d in range(head_dim)]
        tp.prune_linear_out_channels(attn.q_proj, q_idx)
        tp.prune_linear_out_channels(attn.k_proj, kv_idx)
        tp.prune_linear_out_channels(attn.v_proj, kv_idx)
        tp.prune_linear_in_channels(attn.o_proj, q_idx)
    n = counts.pop()
    cfg = model.config
    cfg.head_dim, cfg.num_key_value_heads, cfg.num_attention_heads = head_dim, n, n * group
    return model


def shrink_kv_groups_(model: nn.Module, groups: int) -> nn.Module:
    """Give every block ``groups`` KV groups (the first ones): the shapes of a head-pruned
    student, rebuilt before its saved weights load."""
    kv = _geometry(model)[0]
    if not 0 < groups <= kv:
        raise InputError(f"width: {groups} KV groups is out of range (the model has {kv})")
    return prune_kv_groups_(model, [list(range(groups))] * len(decoder_layers(model)))


def prune_width_(model: nn.Module, input_ids: torch.Tensor, ffn: float | None = None,
                 round_to: int = 32, heads: float | None = None) -> WidthChoice:
    """Measure the importances on ``input_ids`` (both before either cut) and keep, in every
    block, its ``ffn_width(intermediate, ffn, round_to)`` most important FFN channels and its
    ``kv_group_count(kv_heads, heads)`` most important KV groups (in place; None: all)."""
    inter, kv = model.config.intermediate_size, _geometry(model)[0]
    params_before = sum(p.numel() for p in model.parameters())
    channels = groups = None
    if ffn is not None:
        channels = top_channels(ffn_importance(model, input_ids), ffn_width(inter, ffn, round_to))
    if heads is not None:
        groups = top_channels(kv_group_importance(model, input_ids), kv_group_count(kv, heads))
    if channels is not None:
        prune_ffn_(model, channels)
    if groups is not None:
        prune_kv_groups_(model, groups)
    n = len(decoder_layers(model))
    return WidthChoice(inter, model.config.intermediate_size, params_before,
                       sum(p.numel() for p in model.parameters()),
                       channels or [list(range(inter))] * n, kv, _geometry(model)[0],
                       groups or [list(range(kv))] * n)
