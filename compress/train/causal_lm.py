"""Distillation of a depth-pruned causal LM: which teacher blocks the student keeps, the
teacher's top-k log-probabilities cached once on disk, and the loop that trains the student on
them (forward KL at a temperature on the top k plus the rest mass, ``compress.train.topk_kd``).

Public API::

    choose_layers(teacher, windows, layers=None, keep=None, ...) -> LayerChoice
    cached_topk(teacher, windows, k, temperature, cache_dir, key) -> (TopK, hit)
    perplexity(model, windows, batch_size=8) -> float
    distill_lm_(student, topk, train, val, plan) -> LMFit          # trains in place
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from compress.common.console import current
from compress.common.files import sha256_json
from compress.models.layer_depth import angular_distances, decoder_layers, least_important
from compress.train.topk_kd import TopK, load_topk, save_topk, teacher_topk, topk_kd_loss

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import Dataset


def _stack(windows: Dataset, idx, model: nn.Module) -> torch.Tensor:
    """The windows ``idx`` as one batch of ids, on the model's device."""
    device = next(model.parameters()).device
    return torch.stack([windows[int(i)][1] for i in idx]).to(device)


@dataclass(frozen=True)
class LayerChoice:
    """The kept blocks (ascending) and, when chosen by importance, every block's distance."""

    kept: list[int]
    distances: list[float] | None = None


def choose_layers(teacher: nn.Module, windows: Dataset, layers: list[int] | None = None,
                  keep: int | None = None, calibration: int = 8,
                  where: str = "student") -> LayerChoice:
    """``layers`` as given, or the ``keep`` blocks of highest angular distance measured on the
    first ``calibration`` windows (the rest dropped, least important first)."""
    from compress.errors import InputError

    n = len(decoder_layers(teacher))
    if layers is not None:
        bad = [i for i in layers if not 0 <= i < n]
        if bad:
            raise InputError(f"{where}.layers: layer {bad[0]} is out of range (the teacher has "
                             f"{n} layers, 0-{n - 1})")
        return LayerChoice(sorted(layers))
    if keep is None or not 0 < keep <= n:
        raise InputError(f"{where}.keep: {keep} is out of range (the teacher has {n} layers: "
                         f"keep 1-{n})")
    ids = _stack(windows, range(min(calibration, len(windows))), teacher)
    dist = angular_distances(teacher, ids)
    dropped = set(least_important(dist, n - keep))
    return LayerChoice([i for i in range(n) if i not in dropped], dist)


def cached_topk(teacher: nn.Module, windows: Dataset, k: int, temperature: float,
                cache_dir: Path | None, key: dict, batch_size: int = 8) -> tuple[TopK, bool]:
    """The teacher's top-k log-probabilities at ``temperature`` on every window, read from
    ``cache_dir`` when a file of the same ``key`` (teacher, text, k, temperature) is there,
    else computed and written there. Returns ``(top-k, whether the cache served it)``."""
    path = Path(cache_dir) / f"topk-{sha256_json(key)[:24]}.npz" if cache_dir else None
    if path is not None and path.is_file():
        return load_topk(path), True
    idx, vals = [], []
    teacher.eval()
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            ids = _stack(windows, range(start, min(start + batch_size, len(windows))), teacher)
            i, v = teacher_topk(teacher(input_ids=ids, use_cache=False).logits, k, temperature)
            idx.append(i.cpu().numpy())
            vals.append(v.cpu().numpy())
    import numpy as np

    top = TopK(np.concatenate(idx), np.concatenate(vals), temperature)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_topk(path, top.indices, top.logprobs, temperature)
    return top, False


def perplexity(model: nn.Module, windows: Dataset, batch_size: int = 8) -> float:
    """exp(mean next-token negative log-likelihood) over every window, in torch."""
    nll, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            ids = _stack(windows, range(start, min(start + batch_size, len(windows))), model)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
            nll += float(torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum"))
            count += ids[:, 1:].numel()
    return math.exp(nll / count)


@dataclass(frozen=True)
class LMPlan:
    """How the student is trained (from the distill config) and what it sees."""

    epochs: int
    lr: float
    weight_decay: float
    optimizer: str
    schedule: str
    grad_clip: float
    batch_size: int
    temperature: float
    alpha: float
    seed: int = 0
    progress: bool = False


@dataclass
class LMFit:
    best_val: float  # validation perplexity of the epoch kept (epoch 0: before training)
    best_epoch: int
    tokens_per_s: float
    history: list[dict] = field(default_factory=list)


def _schedule(opt, plan: LMPlan, steps: int):
    if plan.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=plan.lr, total_steps=max(steps, 1))
    if plan.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _loss(student: nn.Module, ids: torch.Tensor, top: TopK, rows, plan: LMPlan) -> torch.Tensor:
    logits = student(input_ids=ids, use_cache=False).logits
    loss = plan.alpha * topk_kd_loss(logits, torch.from_numpy(top.indices[rows]).to(ids.device),
                                     torch.from_numpy(top.logprobs[rows]).to(ids.device),
                                     plan.temperature)
    if plan.alpha < 1:
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                               ids[:, 1:].flatten())
        loss = loss + (1 - plan.alpha) * ce
    return loss


def distill_lm_(student: nn.Module, top: TopK, train: Dataset, val: Dataset,
                plan: LMPlan) -> LMFit:
    """Train ``student`` in place (on its device) on the cached top-k of ``train``'s windows;
    after each epoch its validation perplexity, and the best epoch's weights are the ones kept
    (epoch 0: the student as it came, before training)."""
    opt_cls = torch.optim.AdamW if plan.optimizer == "adamw" else torch.optim.SGD
    extra = {} if plan.optimizer == "adamw" else {"momentum": 0.9, "nesterov": True}
    opt = opt_cls(student.parameters(), lr=plan.lr, weight_decay=plan.weight_decay, **extra)
    per_epoch = math.ceil(len(train) / plan.batch_size)
    sched = _schedule(opt, plan, per_epoch * plan.epochs)
    g = torch.Generator().manual_seed(plan.seed)
    best = LMFit(perplexity(student, val), 0, 0.0)
    best_state, tokens, seconds = copy.deepcopy(student.state_dict()), 0, 0.0
    for epoch in range(1, plan.epochs + 1):
        student.train()
        order, total, t0 = torch.randperm(len(train), generator=g), 0.0, time.perf_counter()
        for step in range(per_epoch):
            rows = order[step * plan.batch_size:(step + 1) * plan.batch_size].numpy()
            ids = _stack(train, rows, student)
            loss = _loss(student, ids, top, rows, plan)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if plan.grad_clip:
                torch.nn.utils.clip_grad_norm_(student.parameters(), plan.grad_clip)
            opt.step()
            sched.step()
            total += loss.item()
            tokens += ids.numel()
        seconds += time.perf_counter() - t0
        score = perplexity(student, val)
        best.history.append({"epoch": epoch, "loss": round(total / per_epoch, 5),
                             "val_perplexity": round(score, 4)})
        if plan.progress:
            current().info(f"  epoch {epoch}: loss {total / per_epoch:.4f}, "
                           f"val perplexity {score:.3f}")
        if score < best.best_val:
            best.best_val, best.best_epoch = score, epoch
            best_state = copy.deepcopy(student.state_dict())
    student.load_state_dict(best_state)
    student.eval()
    best.tokens_per_s = tokens / seconds if seconds else 0.0
    return best
