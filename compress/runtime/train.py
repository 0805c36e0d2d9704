"""The one training loop: teacher training, distillation, pruning recovery and QAT all call ``fit_``.

Reads top to bottom: device and precision are chosen once, the loss is Hinton KD (plus FitNets
hints) when a teacher is given and cross-entropy otherwise, the best epoch by validation accuracy
is kept.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compress.data.sources import make_loader


class TrainConfig(BaseModel):
    """Optimizer and schedule. Shared by teacher training, distill, prune recovery and QAT."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=0, le=10000, description="Passes over the training set.")
    lr: float = Field(3e-3, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW/SGD weight decay.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with Nesterov momentum 0.9.")
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "onecycle", description="Learning-rate schedule over all steps."
    )
    grad_clip: float = Field(5.0, ge=0, description="Max gradient norm (0: off).")
    batch_size: int | None = Field(None, gt=0, description="Overrides data.batch_size.")

    @classmethod
    def of(cls, cfg: BaseModel) -> TrainConfig:
        """The training fields of a stage config that extends this one."""
        return cls(**{k: getattr(cfg, k) for k in cls.model_fields})


@dataclass
class KD:
    """Hinton soft targets: ``alpha`` weighs the soft loss against the hard-label loss."""

    temperature: float = 4.0
    alpha: float = 0.7
    hints: list[tuple[str, str]] = field(default_factory=list)  # (student module, teacher module)
    hint_weight: float = 1.0


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Per-batch KD loss. Labeled samples: ``alpha * T^2 * KL + (1 - alpha) * CE``.

    Unlabeled samples (label ``-1``) take the soft loss alone at full weight, so a transfer set
    is labeled by the teacher.
    """
    t = temperature
    log_p = F.log_softmax(student_logits / t, dim=1)
    q = F.softmax(teacher_logits / t, dim=1)
    soft = (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(dim=1) * t * t
    labeled = labels >= 0
    hard = torch.zeros_like(soft)
    if labeled.any():
        hard[labeled] = F.cross_entropy(student_logits[labeled], labels[labeled], reduction="none")
    w_soft = torch.where(labeled, torch.full_like(soft, alpha), torch.ones_like(soft))
    return (w_soft * soft + (1 - alpha) * hard * labeled).mean()


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


@torch.no_grad()
def evaluate(model: nn.Module, ds: Dataset, device: torch.device | str = "cpu", batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``ds``."""
    model.eval()
    correct = total = 0
    for x, y in DataLoader(ds, batch_size=batch_size):
        pred = model(x.to(device)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct / max(total, 1)


@torch.no_grad()
def recalibrate_bn_(model: nn.Module, ds: Dataset, device: torch.device | str = "cpu", batches: int = 20, batch_size: int = 128) -> nn.Module:
    """Re-estimate BatchNorm running statistics with no-grad forward passes (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for i, (x, _) in enumerate(make_loader(ds, batch_size, shuffle=True)):
        if i >= batches:
            break
        model(x.to(device))
    for bn, m in zip(bns, saved, strict=True):
        bn.momentum = m
    model.eval()
    return model


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int
    history: list[dict]
    samples_per_s: float


def fit_(
    model: nn.Module,
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
    """Train ``model`` in place and leave it holding the best epoch's weights (by val accuracy)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model.to(device)
    use_amp = device.type == "cuda"
    # Without augmentation or hints, the frozen teacher's logits repeat every epoch: cache them.
    cache = _TeacherCache(len(train)) if teacher is not None and augment_shift == 0 and not (kd and kd.hints) else None
    if cache is not None:
        train = _Indexed(train)
    loader = make_loader(train, cfg.batch_size or batch_size, shuffle=True, seed=seed)
    hint_regs, s_taps, t_taps = nn.ModuleList(), None, None
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if kd and kd.hints:
            s_taps = _Taps(model, [s for s, _ in kd.hints])
            t_taps = _Taps(teacher, [t for _, t in kd.hints])
            hint_regs = size_hint_regressors(model, teacher, kd.hints, train, device, s_taps, t_taps)
    params = [p for p in model.parameters() if p.requires_grad] + list(hint_regs.parameters())
    params += extra_params or []
    steps = max(1, cfg.epochs * len(loader))
    opt = _optimizer(cfg, params)
    sched = _schedule(cfg, opt, steps)

    best = (-1.0, -1, copy.deepcopy(model.state_dict()))
    history: list[dict] = []
    seen, seconds = 0, 0.0
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    import time

    for epoch in range(cfg.epochs):
        model.train()
        t0, loss_sum, n_batches = time.perf_counter(), 0.0, 0
        for batch in loader:
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            x = random_shift(x, augment_shift)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = cache.get(batch[2], teacher, x) if cache is not None else teacher(x)
                    loss = kd_loss(logits.float(), t_logits.float(), y, kd.temperature, kd.alpha)
                    if s_taps is not None:
                        for reg, (s, t) in zip(hint_regs, kd.hints, strict=True):
                            loss = loss + kd.hint_weight * F.mse_loss(
                                reg(s_taps.out[s].float()), t_taps.out[t].float()
                            )
                else:
                    loss = F.cross_entropy(logits.float(), y, ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += float(loss.detach())
            n_batches += 1
            seen += len(x)
            bar.update(1)
        seconds += time.perf_counter() - t0
        acc = evaluate(model, val, device)
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(n_batches, 1), "val_accuracy": acc})
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / max(n_batches, 1):.4f}", val_acc=f"{acc:.4f}")
        if acc > best[0]:
            best = (acc, epoch + 1, copy.deepcopy(model.state_dict()))
    bar.close()
    for taps in (s_taps, t_taps):
        if taps is not None:
            taps.close()
    if cfg.epochs > 0:
        model.load_state_dict(best[2])
    else:
        best = (evaluate(model, val, device), 0, None)
    model.eval()
    return FitResult(best[0], best[1], history, seen / seconds if seconds > 0 else math.nan)


class _Indexed(Dataset):
    """Yields ``(x, y, index)`` so per-sample teacher outputs can be cached."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i][:2]
        return x, y, i


class _TeacherCache:
    """Teacher logits per training sample, filled on first sight (the teacher is frozen, eval mode)."""

    def __init__(self, n: int):
        self.n, self.store, self.have = n, None, torch.zeros(n, dtype=torch.bool)

    def get(self, idx: torch.Tensor, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.store is not None and bool(self.have[idx].all()):
            return self.store[idx.to(self.store.device)]
        out = teacher(x).float()
        if self.store is None:
            self.store = torch.zeros(self.n, out.shape[1], device=out.device)
        self.store[idx.to(out.device)] = out
        self.have[idx] = True
        return out


def size_hint_regressors(model, teacher, hints, train, device, s_taps, t_taps) -> nn.ModuleList:
    """One regressor per hint pair, sized from the shapes observed on one real batch."""
    x = torch.stack([train[i][0] for i in range(min(2, len(train)))]).to(device)
    was = model.training
    model.eval()
    with torch.no_grad():
        model(x)
        teacher(x)
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
