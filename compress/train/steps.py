"""One optimisation step and one epoch of ``fit_`` (``compress.train.loop``), and the state a
checkpoint saves: the best epoch so far, the epoch's running sums, the position in the data."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from compress.config.train import TrainConfig
from compress.tasks.base import Task
from compress.train import distributed as dist
from compress.train.checkpoint import rng_state, set_rng_state
from compress.train.hints import size_hint_regressors
from compress.train.teacher_cache import Taps, Teacher

if TYPE_CHECKING:
    from compress.train.plan import KD, FitPlan


@dataclass
class Best:
    """The best epoch so far by the task's headline metric on ``val``."""

    score: float | None = None
    epoch: int = -1
    weights: dict | None = None


@dataclass
class EpochSums:
    """The running sums of the epoch in progress."""

    loss: float = 0.0
    batches: int = 0
    samples: int = 0


@dataclass
class FitState:
    """Where the loop stands: what a checkpoint saves besides the model and the optimiser."""

    best: Best
    history: list[dict] = field(default_factory=list)
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps into the current epoch
    sums: EpochSums = field(default_factory=EpochSums)
    seen: int = 0  # samples trained on, all epochs
    seconds: float = 0.0  # time spent training them
    gen_state: torch.Tensor | None = None  # the loader's generator as this epoch began


@dataclass
class Steps:
    """One optimisation step and one epoch: the loss (plain, or the task's distillation loss plus
    hints), autocast and the grad scaler, DDP, gradient clipping, the optimizer and its schedule."""

    task: Task
    model: nn.Module
    net: nn.Module  # what the forward goes through: the model, in DDP and compiled when asked
    teacher: Teacher | None
    kd: KD | None
    hint_regs: nn.ModuleList
    s_taps: Taps | None
    params: list
    cfg: TrainConfig
    device: torch.device
    augment_shift: int
    amp: torch.dtype | None
    extra: list = field(default_factory=list)  # trained parameters outside the DDP-wrapped model
    opt: torch.optim.Optimizer | None = None
    sched: object = None
    scaler: object = None
    gen: torch.Generator | None = None

    @classmethod
    def build(cls, task: Task, model: nn.Module, t: Teacher | None, kd: KD | None, train: Dataset,
              plan: FitPlan, augment_shift: int, extra_params, amp) -> Steps:
        cfg, device = plan.cfg, plan.device
        s_taps = Taps(model, [s for s, _ in kd.hints]) if t and kd.hints else None
        regs = (size_hint_regressors(task, model, t.module, kd.hints, train, device, s_taps, t.taps)
                if s_taps else nn.ModuleList())
        params = [p for p in model.parameters() if p.requires_grad] + list(regs.parameters())
        params += extra_params or []
        if cfg.channels_last and device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        net = dist.wrap_ddp(model, device)
        net = torch.compile(net) if cfg.compile else net
        own = {id(p) for p in model.parameters()}
        extra = [p for p in params if id(p) not in own]
        return cls(task, model, net, t, kd, regs, s_taps, params, cfg, device, augment_shift, amp, extra)

    def schedule(self, steps: int) -> None:
        self.opt = _optimizer(self.cfg, self.params)
        self.sched = _schedule(self.cfg, self.opt, steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def epoch(self, loader, bar, st: FitState, checkpoint) -> tuple[float, int]:
        """One pass over ``loader`` from ``st.step``; returns the mean loss (over ranks) and the
        samples seen (all ranks). ``checkpoint()`` runs every ``checkpoint_every_steps`` steps."""
        self.model.train()
        sampler = loader.batch_sampler
        sampler.set_epoch(st.epoch)
        sampler.start_step = st.step
        st.gen_state = loader.generator.get_state()
        for batch in loader:
            loss = self.step(batch, sampler.global_size(st.step))
            s = st.sums
            st.sums = EpochSums(s.loss + float(loss.detach()), s.batches + 1, s.samples + len(batch[1]))
            st.step += 1
            bar.update(1)
            every = self.cfg.checkpoint_every_steps
            if every and st.step % every == 0 and st.step < len(sampler):
                checkpoint()
        sampler.start_step = 0
        dist.broadcast_buffers_(self.model)
        s = st.sums
        loss_mean, seen = dist.mean([s.loss / max(s.batches, 1), float(s.samples)], self.device)
        return loss_mean, int(round(seen * dist.world().size))

    def step(self, batch, global_size: int) -> torch.Tensor:
        loss = self.loss(batch)
        w = dist.world()
        # DDP averages gradients over ranks: weigh each rank's mean by its share of the global batch
        scaled = loss * (len(batch[1]) * w.size / global_size) if w.size > 1 else loss
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(scaled).backward()
        dist.average_grads_(self.extra)
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.sched is not None:
            self.sched.step()
        return loss

    def loss(self, batch) -> torch.Tensor:
        task, t, kd, device = self.task, self.teacher, self.kd, self.device
        cl = self.cfg.channels_last and device.type == "cuda"
        inputs = {k: _to(v, device, cl) for k, v in batch[0].items()}
        target = batch[1].to(device, non_blocking=True)
        inputs = task.augment(inputs, self.augment_shift)
        with self._autocast():
            out = task.train_forward(self.net, inputs)
            if t is None:
                return task.loss(out, target)
            t_out = t.outputs(task, inputs, batch[2] if len(batch) > 2 else None)
            loss = task.distill_loss(out, t_out, target, kd.soft)
            for reg, (s, h) in zip(self.hint_regs, kd.hints, strict=True):
                loss = loss + kd.hint_weight * F.mse_loss(reg(self.s_taps.out[s].float()),
                                                          t.taps.out[h].float())
            return loss

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def snapshot(self, st: FitState) -> dict:
        """What a checkpoint holds (tensors and plain types, for ``weights_only`` loading)."""
        b, s = st.best, st.sums
        return {"epoch": st.epoch, "step": st.step, "seen": st.seen, "seconds": st.seconds,
                "sums": {"loss": s.loss, "batches": s.batches, "samples": s.samples},
                "history": st.history,
                "best": {"score": b.score, "epoch": b.epoch, "weights": b.weights},
                "model": self.model.state_dict(), "regs": self.hint_regs.state_dict(),
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict() if self.sched else None,
                "scaler": self.scaler.state_dict(), "rng": dist.gather(rng_state()),
                "loader": st.gen_state if st.step else self.gen.get_state()}

    def restore(self, s: dict, loader) -> FitState:
        self.model.load_state_dict(s["model"])
        self.hint_regs.load_state_dict(s["regs"])
        self.opt.load_state_dict(s["opt"])
        if self.sched is not None and s["sched"] is not None:
            self.sched.load_state_dict(s["sched"])
        self.scaler.load_state_dict(s["scaler"])
        rngs = s["rng"]
        set_rng_state(rngs[dist.world().rank] if dist.world().rank < len(rngs) else rngs[0])
        loader.generator.set_state(s["loader"])
        return FitState(Best(**s["best"]), s["history"], s["epoch"], s["step"], EpochSums(**s["sums"]),
                        s["seen"], s["seconds"])

    def close(self) -> None:
        for taps in (self.s_taps, self.teacher.taps if self.teacher else None):
            if taps is not None:
                taps.close()


def _to(v: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    v = v.to(device, non_blocking=True)
    return v.contiguous(memory_format=torch.channels_last) if channels_last and v.ndim == 4 else v


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
