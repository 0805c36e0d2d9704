"""The one training loop: teacher training, distillation, pruning recovery and QAT all call ``fit_``.

Reads top to bottom: device and precision are chosen once, the loss is the task's distillation
loss (plus FitNets hints) when a teacher is given and its plain loss otherwise, the best epoch by
the task's headline metric on the validation split is kept. Batches are dicts of named inputs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from compress.runtime.train_config import TrainConfig
from compress.tasks.base import KDSettings, Task, run_torch

__all__ = ["KD", "FitResult", "TrainConfig", "fit_", "recalibrate_bn_", "evaluate_headline"]


@dataclass
class KD(KDSettings):
    """Distillation settings: the task's soft-target knobs plus FitNets hint pairs."""

    hints: list[tuple[str, str]] = field(default_factory=list)  # (student module, teacher module)
    hint_weight: float = 1.0


class HintRegressor(nn.Module):
    """Maps a student feature to the teacher feature's shape: 1x1 conv (+resize) or linear."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size):
        super().__init__()
        self.size = tuple(teacher_shape[2:]) if len(teacher_shape) == 4 else None
        if len(student_shape) == 4 and len(teacher_shape) == 4:
            self.proj: nn.Module = nn.Conv2d(student_shape[1], teacher_shape[1], 1, bias=False)
        elif len(student_shape) == 2 and len(teacher_shape) == 2:
            self.proj = nn.Linear(student_shape[1], teacher_shape[1], bias=False)
        else:
            raise ValueError(
                f"hint shapes differ in rank: student {list(student_shape)}, teacher {list(teacher_shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


class _Taps:
    """Forward hooks that keep the outputs of named modules."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KeyError(missing[0])
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [
            modules[n].register_forward_hook(lambda _m, _i, o, n=n: self.out.__setitem__(n, o))
            for n in names
        ]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def random_shift(x: torch.Tensor, max_px: int) -> torch.Tensor:
    """Translate each image by up to ``max_px`` pixels (zero-padded with the border value)."""
    if max_px <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_px,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_px + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * max_px + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def evaluate_headline(task: Task, model: nn.Module, ds: Dataset, device: torch.device | str = "cpu",
                      reference: torch.Tensor | None = None) -> float:
    """The task's headline quality of ``model`` on ``ds`` (``reference``: teacher outputs on ``ds``)."""
    out, target = run_torch(task, model, ds, device)
    ref = reference.numpy() if reference is not None else None
    return task.headline(task.quality(out.numpy(), target.numpy(), ref))


@torch.no_grad()
def recalibrate_bn_(model: nn.Module, task: Task, ds: Dataset, device: torch.device | str = "cpu",
                    batches: int = 20, batch_size: int = 128) -> nn.Module:
    """Re-estimate BatchNorm running statistics with no-grad forward passes (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for i, (inputs, _) in enumerate(task.loader(ds, batch_size, shuffle=True)):
        if i >= batches:
            break
        task.forward(model, {k: v.to(device) for k, v in inputs.items()})
    for bn, m in zip(bns, saved, strict=True):
        bn.momentum = m
    model.eval()
    return model


@dataclass
class FitResult:
    best_val: float  # the task's headline metric on the validation split, at the best epoch
    best_epoch: int
    history: list[dict]
    samples_per_s: float


@dataclass
class _Teacher:
    """The frozen teacher as the loop sees it: hint taps, and its outputs cached when they repeat."""

    module: nn.Module
    cache: _TeacherCache | None
    taps: _Taps | None
    val_out: torch.Tensor | None  # reference outputs on the validation split

    def outputs(self, task: Task, inputs: dict, idx: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            if self.cache is not None:
                return self.cache.get(idx, lambda: task.train_forward(self.module, inputs))
            return task.train_forward(self.module, inputs)


def fit_(
    model: nn.Module,
    task: Task,
    train: Dataset,
    val: Dataset,
    cfg: TrainConfig,
    batch_size: int,
    device: torch.device,
    teacher: nn.Module | None = None,
    kd: KD | None = None,
    augment_shift: int = 0,
    seed: int = 0,
    desc: str = "train",
    progress: bool = True,
    extra_params: list[nn.Parameter] | None = None,
) -> FitResult:
    """Train ``model`` in place and leave it holding the best epoch's weights (by the task's
    headline metric on ``val``)."""
    from compress.runtime.console import current
    from compress.runtime.console import progress as progress_bar

    torch.manual_seed(seed)
    model.to(device)
    kd = kd or KD()
    t, train = _prepare_teacher(task, teacher, kd, train, val, augment_shift, device)
    loader = task.loader(train, cfg.batch_size or batch_size, shuffle=True, seed=seed)
    loop = _Loop.build(task, model, t, kd, train, cfg, device, augment_shift, extra_params)
    ref = t.val_out if t else None
    best = (None, -1, copy.deepcopy(model.state_dict()))
    history: list[dict] = []
    seen, seconds = 0, 0.0
    bar = progress_bar(max(1, cfg.epochs * len(loader)), desc, progress)
    loop.schedule(max(1, cfg.epochs * len(loader)))
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        mean_loss, n = loop.epoch(loader, bar)
        seen, seconds = seen + n, seconds + time.perf_counter() - t0
        score = evaluate_headline(task, model, val, device, ref)
        history.append({"epoch": epoch + 1, "loss": mean_loss, f"val_{task.metric}": score})
        bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}", **{f"val_{task.metric}": f"{score:.4f}"})
        current().event("epoch", loop=desc, **history[-1])
        if best[0] is None or task.better(score, best[0]):
            best = (score, epoch + 1, copy.deepcopy(model.state_dict()))
    bar.close()
    loop.close()
    if cfg.epochs > 0:
        model.load_state_dict(best[2])
    else:
        best = (evaluate_headline(task, model, val, device, ref), 0, None)
    model.eval()
    return FitResult(best[0], best[1], history, seen / seconds if seconds > 0 else math.nan)


@dataclass
class _Loop:
    """One optimisation step and one epoch: the loss (plain, or the task's distillation loss plus
    hints), AMP on CUDA, gradient clipping, the optimizer and its schedule."""

    task: Task
    model: nn.Module
    teacher: _Teacher | None
    kd: KD
    hint_regs: nn.ModuleList
    s_taps: _Taps | None
    params: list
    cfg: TrainConfig
    device: torch.device
    augment_shift: int
    opt: torch.optim.Optimizer | None = None
    sched: object = None

    @classmethod
    def build(cls, task, model, t, kd, train, cfg, device, augment_shift, extra_params) -> _Loop:
        s_taps = _Taps(model, [s for s, _ in kd.hints]) if t and kd.hints else None
        regs = (size_hint_regressors(task, model, t.module, kd.hints, train, device, s_taps, t.taps)
                if s_taps else nn.ModuleList())
        params = [p for p in model.parameters() if p.requires_grad] + list(regs.parameters())
        params += extra_params or []
        return cls(task, model, t, kd, regs, s_taps, params, cfg, device, augment_shift)

    def schedule(self, steps: int) -> None:
        self.opt = _optimizer(self.cfg, self.params)
        self.sched = _schedule(self.cfg, self.opt, steps)

    def loss(self, batch) -> torch.Tensor:
        task, t, kd, device = self.task, self.teacher, self.kd, self.device
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch[0].items()}
        target = batch[1].to(device, non_blocking=True)
        inputs = task.augment(inputs, self.augment_shift)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = task.train_forward(self.model, inputs)
            if t is None:
                return task.loss(out, target)
            t_out = t.outputs(task, inputs, batch[2] if len(batch) > 2 else None)
            loss = task.distill_loss(out, t_out, target, kd)
            for reg, (s, h) in zip(self.hint_regs, kd.hints, strict=True):
                loss = loss + kd.hint_weight * F.mse_loss(reg(self.s_taps.out[s].float()),
                                                          t.taps.out[h].float())
            return loss

    def epoch(self, loader, bar) -> tuple[float, int]:
        """One pass over ``loader``; returns the mean loss and the samples seen."""
        self.model.train()
        loss_sum, n_batches, seen = 0.0, 0, 0
        for batch in loader:
            loss = self.loss(batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.opt.step()
            if self.sched is not None:
                self.sched.step()
            loss_sum += float(loss.detach())
            n_batches += 1
            seen += len(batch[1])
            bar.update(1)
        return loss_sum / max(n_batches, 1), seen

    def close(self) -> None:
        for taps in (self.s_taps, self.teacher.taps if self.teacher else None):
            if taps is not None:
                taps.close()


def _prepare_teacher(task: Task, teacher: nn.Module | None, kd: KD, train: Dataset, val: Dataset,
                     augment_shift: int, device: torch.device) -> tuple[_Teacher | None, Dataset]:
    if teacher is None:
        return None, train
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    # Without augmentation or hints, the frozen teacher's outputs repeat every epoch: cache them.
    cached = augment_shift == 0 and not kd.hints and task.cacheable
    taps = _Taps(teacher, [h for _, h in kd.hints]) if kd.hints else None
    val_out = run_torch(task, teacher, val, device)[0] if task.needs_reference else None
    t = _Teacher(teacher, _TeacherCache(len(train)) if cached else None, taps, val_out)
    return t, (_Indexed(train) if cached else train)


class _Indexed(Dataset):
    """Yields ``(x, y, index)`` so per-sample teacher outputs can be cached."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        inputs, target = self.base[i][:2]
        return inputs, target, i


class _TeacherCache:
    """Teacher logits per training sample, filled on first sight (the teacher is frozen, eval mode)."""

    def __init__(self, n: int):
        self.n, self.store, self.have = n, None, torch.zeros(n, dtype=torch.bool)

    def get(self, idx: torch.Tensor, compute) -> torch.Tensor:
        if self.store is not None and bool(self.have[idx].all()):
            return self.store[idx.to(self.store.device)]
        out = compute().float()
        if self.store is None:
            self.store = torch.zeros(self.n, *out.shape[1:], device=out.device)
        self.store[idx.to(out.device)] = out
        self.have[idx] = True
        return out


def size_hint_regressors(task: Task, model, teacher, hints, train, device, s_taps, t_taps) -> nn.ModuleList:
    """One regressor per hint pair, sized from the shapes observed on one real batch."""
    inputs, _ = task.collate([train[i][:2] for i in range(min(2, len(train)))])
    inputs = {k: v.to(device) for k, v in inputs.items()}
    was = model.training
    model.eval()
    with torch.no_grad():
        task.forward(model, inputs)
        task.forward(teacher, inputs)
    model.train(was)
    regs = [HintRegressor(s_taps.out[s].shape, t_taps.out[t].shape) for s, t in hints]
    return nn.ModuleList(regs).to(device)


def _optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _schedule(cfg: TrainConfig, opt, steps: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.25)
    return None
