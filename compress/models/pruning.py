"""What is coupled, what matters, what must keep its width: torch-pruning's DepGraph pruner for a
model (``make_pruner``), its importance criteria (``make_importance``), the per-layer floor a
global step must respect (``capped_indices``) and the layers whose widths the outputs fix
(``ignored_layers``, ``output_layers``). How much to cut, step by step, is the prune stage's
schedule (``compress.stages.prune``); the widths a pruned model is rebuilt with are recorded by
``compress.models.widths``.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import torch
from torch import nn

from compress.config.stages import PruneConfig
from compress.errors import ConfigError
from compress.models.widths import attention_heads

Example = torch.Tensor | tuple | dict


def make_importance(name: str):
    """The torch-pruning importance for a criterion name."""
    import torch_pruning as tp

    imp = tp.importance
    return {
        # l1/l2: the classic filter norm of the layer that roots the group
        "l1": lambda: imp.MagnitudeImportance(p=1, group_reduction="first", normalizer=None),
        "l2": lambda: imp.MagnitudeImportance(p=2, group_reduction="first", normalizer=None),
        "group_l2": lambda: imp.GroupMagnitudeImportance(p=2),
        "bn_scale": lambda: imp.BNScaleImportance(),
        "taylor": lambda: imp.GroupTaylorImportance(),
        "lamp": lambda: imp.LAMPImportance(p=2),
        "random": lambda: imp.RandomImportance(),
    }[name]()


def make_pruner(model, example, cfg: PruneConfig, ratio: float, steps: int, where: str):
    import torch_pruning as tp

    ignored = ignored_layers(model, example, cfg, where)
    heads = attention_heads(model)
    head_ratio = ratio if cfg.head_ratio is None else cfg.head_ratio
    return tp.pruner.BasePruner(
        model, example, importance=make_importance(cfg.importance),
        global_pruning=cfg.scope == "global", pruning_ratio=ratio, max_pruning_ratio=cfg.max_ratio,
        iterative_steps=steps, ignored_layers=ignored, round_to=cfg.round_to if cfg.round_to > 1 else None,
        # whole heads go; the head size stays what attention kernels expect
        num_heads=heads, prune_num_heads=bool(heads) and head_ratio > 0, prune_head_dims=not heads,
        head_pruning_ratio=head_ratio if heads else 0.0, output_transform=_reduce_outputs,
    )


def capped_indices(group, pruner, cfg: PruneConfig) -> list[int] | None:
    """Trim a group's indices so no layer loses more than ``max_ratio`` of its initial channels.

    torch-pruning checks the floor only before a step, so one global step can cut below it.
    Returns None to prune the group as is, else the least important indices that fit.
    """
    item = group[0]
    module, fn, idxs = item.dep.target.module, item.dep.handler, item.idxs
    dg = pruner.DG
    if module in pruner.num_heads:
        return None  # attention groups lose whole heads, bounded by head_ratio
    out = dg.is_out_channel_pruning_fn(fn)
    current = dg.get_out_channels(module) if out else dg.get_in_channels(module)
    init = (pruner.layer_init_out_ch if out else pruner.layer_init_in_ch).get(module)
    if current is None or init is None:
        return None
    floor = math.ceil(init * (1 - cfg.max_ratio) - 1e-9)
    if cfg.round_to > 1:
        floor = min(init, math.ceil(floor / cfg.round_to) * cfg.round_to)
    allowed = current - floor
    if len(idxs) <= allowed:
        return None
    full = dg.get_pruning_group(module, fn, list(range(current)))
    imp = pruner.estimate_importance(full)
    if allowed <= 0 or imp is None or len(imp) != current:
        return []  # grouped channels or nothing left to cut: leave this group whole
    return sorted(sorted(idxs, key=lambda i: float(imp[i]))[:allowed])


def ignored_layers(model: nn.Module, example: Example, cfg: PruneConfig, where: str) -> list[nn.Module]:
    named = [(n, m) for n, m in model.named_modules() if n]
    ignored: list[nn.Module] = []
    for i, pattern in enumerate(cfg.ignore):
        hits = [m for n, m in named if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            top = ", ".join(n for n, _ in named if "." not in n)
            raise ConfigError(f"{where}.ignore[{i}]: {pattern!r} matches no module (top-level modules: {top})")
        ignored += hits
    if cfg.keep_head:
        ignored += output_layers(model, example)
        if attention_heads(model):
            # a transformer's hidden size is its embedding space, tied through every residual add
            # (and, for an embedding model, the space the teacher is compared in): heads and FFN
            # width are what narrows it
            ignored += [m for m in model.modules() if isinstance(m, nn.LayerNorm | nn.Embedding)]
    return ignored


def output_layers(model: nn.Module, example: Example) -> list[nn.Module]:
    """The layers whose widths fix the output shape: the last linear/conv run, and any leaf module
    whose output tensor is returned as is (e.g. a final LayerNorm)."""
    order: list[tuple[nn.Module, Any]] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, _i, o: order.append((m, o))) for m in leaves]
    try:
        with torch.no_grad():
            outs = _tensors(_call(model, example))
    finally:
        for h in hooks:
            h.remove()
    found = [m for m, o in order if isinstance(o, torch.Tensor) and any(o is t for t in outs)]
    roots = [m for m, _ in order if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]
    if roots:
        found.append(roots[-1])
    return list(dict.fromkeys(found))


def _call(model: nn.Module, example: Example):
    if isinstance(example, dict):
        return model(**example)
    return model(*example) if isinstance(example, tuple) else model(example)


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for o in out for t in _tensors(o)]
    return []


def _reduce_outputs(out) -> torch.Tensor:
    # DepGraph traces back from one tensor; summing every float output reaches all of them
    return sum(t.float().sum() for t in _tensors(out) if t.is_floating_point())


def output_shapes(model: nn.Module, example: Example) -> list[tuple[int, ...]]:
    with torch.no_grad():
        return [tuple(t.shape) for t in _tensors(_call(model.eval(), example))]
