"""The one training loop: teacher training, distillation, pruning recovery and QAT all call ``fit_``.

Reads top to bottom: device and precision are chosen once, the loss is the task's distillation
loss (plus FitNets hints) when a teacher is given and its plain loss otherwise, the best epoch by
the task's headline metric on the validation split is kept. Batches are dicts of named inputs.

Under torch.distributed (torchrun, ``--nproc``) the model is wrapped in DDP and each rank takes its
slice of every global batch; in the engine's training scope the loop checkpoints itself into the
stage's work folder and resumes from there, and the teacher's outputs come from the disk cache.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compress.common.files import sha256_json
from compress.config.train import TrainConfig
from compress.tasks.base import KDSettings, Task, run_torch
from compress.train import distributed as dist
from compress.train.checkpoint import (
    Checkpointer,
    current_scope,
    rng_state,
    set_rng_state,
    state_sha256,
)
from compress.train.hints import size_hint_regressors
from compress.train.teacher_cache import Indexed, MemoryCache, Taps, Teacher, build_disk_cache
from compress.train.teacher_cache import cache_key as teacher_cache_key

__all__ = ["KD", "FitResult", "TrainConfig", "fit_", "recalibrate_bn_", "evaluate_headline"]


@dataclass
class KD(KDSettings):
    """Distillation settings: the task's soft-target knobs plus FitNets hint pairs."""

    hints: list[tuple[str, str]] = field(default_factory=list)  # (student module, teacher module)
    hint_weight: float = 1.0


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
class _State:
    """Where the loop stands: what a checkpoint saves besides the model and the optimizer."""

    best: tuple  # (score or None, epoch, state_dict)
    history: list[dict] = field(default_factory=list)
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps into the current epoch
    acc: list[float] = field(default_factory=lambda: [0.0, 0, 0])  # loss sum, batches, samples
    seen: int = 0
    seconds: float = 0.0
    gen_state: torch.Tensor | None = None  # the loader's generator as this epoch began


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
    headline metric on ``val``). ``batch_size`` (or ``cfg.batch_size``) is the global batch."""
    from compress.common.console import current
    from compress.common.console import progress as progress_bar

    torch.manual_seed(seed)
    model.to(device)
    kd = kd or KD()
    amp = amp_dtype(cfg.precision, device)
    t, train = _prepare_teacher(task, teacher, kd, train, val, augment_shift, device, cfg, amp)
    loader = _loader(task, train, cfg.batch_size or batch_size, seed, cfg, device)
    loop = _Loop.build(task, model, t, kd, train, cfg, device, augment_shift, extra_params, amp)
    loop.schedule(max(1, cfg.epochs * len(loader)))
    ck = _checkpointer(model, teacher, kd, cfg, len(train), batch_size, augment_shift, seed, desc)
    st = _State((None, -1, copy.deepcopy(model.state_dict())))
    loop.gen = loader.generator
    saved = ck.load() if ck.enabled and current_scope().resume else None
    if saved is not None:
        st = loop.restore(saved, loader)
        where = f" (step {st.step} of epoch {st.epoch + 1})" if st.step else ""
        current().info(f"[{desc}] resumed from checkpoint at epoch {st.epoch}{where}")
    ref = t.val_out if t else None
    bar = progress_bar(max(1, cfg.epochs * len(loader)), desc, progress and dist.world().main)
    bar.update(st.epoch * len(loader) + st.step)
    for epoch in range(st.epoch, cfg.epochs):
        t0 = time.perf_counter()
        mean_loss, n = loop.epoch(loader, bar, st, lambda: ck.save(loop.snapshot(st)) if ck.enabled else None)
        st.seen, st.seconds = st.seen + n, st.seconds + time.perf_counter() - t0
        score = evaluate_headline(task, model, val, device, ref)
        st.history.append({"epoch": epoch + 1, "loss": mean_loss, f"val_{task.metric}": score})
        bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}", **{f"val_{task.metric}": f"{score:.4f}"})
        current().event("epoch", loop=desc, **st.history[-1])
        if st.best[0] is None or task.better(score, st.best[0]):
            st.best = (score, epoch + 1, copy.deepcopy(model.state_dict()))
        st.epoch, st.step, st.acc = epoch + 1, 0, [0.0, 0, 0]
        if ck.enabled:
            ck.save(loop.snapshot(st))
    bar.close()
    loop.close()
    return _finish(model, st, cfg, lambda: evaluate_headline(task, model, val, device, ref))


def _finish(model: nn.Module, st, cfg: TrainConfig, score) -> FitResult:
    """Load the best epoch's weights (with no epochs: score the model as it is)."""
    best = st.best
    if cfg.epochs > 0:
        model.load_state_dict(best[2])
    else:
        best = (score(), 0, None)
    model.eval()
    return FitResult(best[0], best[1], st.history, st.seen / st.seconds if st.seconds > 0 else math.nan)


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32). auto: bf16 on CUDA when supported, else fp16; fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _loader(task: Task, train: Dataset, global_batch: int, seed: int, cfg: TrainConfig,
            device: torch.device) -> DataLoader:
    """The global batch split over ranks; the sampler reshuffles by epoch from ``seed``."""
    sampler = dist.batch_sampler(len(train), global_batch, True, seed)
    g = torch.Generator().manual_seed(seed)
    collate = _indexed_collate(task) if isinstance(train, Indexed) else task.collate
    return DataLoader(train, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.workers,
                      pin_memory=device.type == "cuda", generator=g)


def _indexed_collate(task: Task):
    """The task's collate for ``(inputs, target, index)`` items: the index rides along as a third
    tensor (the teacher cache's row), whatever the task's own collate keeps."""
    def collate(items):
        return (*task.collate([it[:2] for it in items]), torch.tensor([it[2] for it in items]))

    return collate


def _checkpointer(model, teacher, kd, cfg, n, batch_size, augment_shift, seed, desc) -> Checkpointer:
    scope = current_scope()
    if scope.work_dir is None:
        return Checkpointer(None, desc, "")
    t_key = (scope.teacher_sha256 if teacher is not None and teacher is scope.teacher
             else state_sha256(teacher) if teacher is not None else None)
    key = sha256_json({"scope": scope.key, "desc": desc, "cfg": cfg.model_dump(mode="json"), "n": n,
                       "batch": batch_size, "shift": augment_shift, "seed": seed, "world": dist.world().size,
                       "kd": dataclasses.asdict(kd), "teacher": t_key,
                       "init": state_sha256(model)})
    return Checkpointer(scope.work_dir, desc, key)


@dataclass
class _Loop:
    """One optimisation step and one epoch: the loss (plain, or the task's distillation loss plus
    hints), autocast and the grad scaler, DDP, gradient clipping, the optimizer and its schedule."""

    task: Task
    model: nn.Module
    net: nn.Module  # what the forward goes through: the model, in DDP and compiled when asked
    teacher: Teacher | None
    kd: KD
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
    def build(cls, task, model, t, kd, train, cfg, device, augment_shift, extra_params, amp) -> _Loop:
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

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def loss(self, batch) -> torch.Tensor:
        task, t, kd, device = self.task, self.teacher, self.kd, self.device
        cl = self.cfg.channels_last and device.type == "cuda"
        inputs = {k: _to(v, device, cl) for k, v in batch[0].items()}
        target = batch[1].to(device, non_blocking=True)
        inputs = task.augment(inputs, self.augment_shift)
        with self.autocast():
            out = task.train_forward(self.net, inputs)
            if t is None:
                return task.loss(out, target)
            t_out = t.outputs(task, inputs, batch[2] if len(batch) > 2 else None)
            loss = task.distill_loss(out, t_out, target, kd)
            for reg, (s, h) in zip(self.hint_regs, kd.hints, strict=True):
                loss = loss + kd.hint_weight * F.mse_loss(reg(self.s_taps.out[s].float()),
                                                          t.taps.out[h].float())
            return loss

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

    def epoch(self, loader, bar, st: _State, checkpoint) -> tuple[float, int]:
        """One pass over ``loader`` from ``st.step``; returns the mean loss (over ranks) and the
        samples seen (all ranks). ``checkpoint()`` runs every ``checkpoint_every_steps`` steps."""
        self.model.train()
        sampler = loader.batch_sampler
        sampler.set_epoch(st.epoch)
        sampler.start_step = st.step
        st.gen_state = loader.generator.get_state()
        for batch in loader:
            loss = self.step(batch, sampler.global_size(st.step))
            st.acc = [st.acc[0] + float(loss.detach()), st.acc[1] + 1, st.acc[2] + len(batch[1])]
            st.step += 1
            bar.update(1)
            every = self.cfg.checkpoint_every_steps
            if every and st.step % every == 0 and st.step < len(sampler):
                checkpoint()
        sampler.start_step = 0
        dist.broadcast_buffers_(self.model)
        loss_mean, seen = dist.mean([st.acc[0] / max(st.acc[1], 1), float(st.acc[2])], self.device)
        return loss_mean, int(round(seen * dist.world().size))

    def snapshot(self, st: _State) -> dict:
        """What a checkpoint holds (tensors and plain types, for ``weights_only`` loading)."""
        return {"epoch": st.epoch, "step": st.step, "acc": list(st.acc), "seen": st.seen,
                "seconds": st.seconds, "history": st.history, "best": list(st.best),
                "model": self.model.state_dict(), "regs": self.hint_regs.state_dict(),
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict() if self.sched else None,
                "scaler": self.scaler.state_dict(), "rng": dist.gather(rng_state()),
                "loader": st.gen_state if st.step else self.gen.get_state()}

    def restore(self, s: dict, loader) -> _State:
        self.model.load_state_dict(s["model"])
        self.hint_regs.load_state_dict(s["regs"])
        self.opt.load_state_dict(s["opt"])
        if self.sched is not None and s["sched"] is not None:
            self.sched.load_state_dict(s["sched"])
        self.scaler.load_state_dict(s["scaler"])
        rngs = s["rng"]
        set_rng_state(rngs[dist.world().rank] if dist.world().rank < len(rngs) else rngs[0])
        loader.generator.set_state(s["loader"])
        return _State(tuple(s["best"]), s["history"], s["epoch"], s["step"], s["acc"], s["seen"], s["seconds"])

    def close(self) -> None:
        for taps in (self.s_taps, self.teacher.taps if self.teacher else None):
            if taps is not None:
                taps.close()


def _to(v: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    v = v.to(device, non_blocking=True)
    return v.contiguous(memory_format=torch.channels_last) if channels_last and v.ndim == 4 else v


def _prepare_teacher(task: Task, teacher: nn.Module | None, kd: KD, train: Dataset, val: Dataset,
                     augment_shift: int, device: torch.device, cfg: TrainConfig,
                     amp: torch.dtype | None) -> tuple[Teacher | None, Dataset]:
    if teacher is None:
        return None, train
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    taps = Taps(teacher, [h for _, h in kd.hints]) if kd.hints else None
    val_out = run_torch(task, teacher, val, device)[0] if task.needs_reference else None
    cache = _teacher_cache(task, teacher, kd, train, augment_shift, device, cfg, amp)
    return Teacher(teacher, cache, taps, val_out), (Indexed(train) if cache is not None else train)


def _teacher_cache(task, teacher, kd, train, augment_shift, device, cfg, amp):
    """Disk cache when the scope names the teacher and the data, memory cache otherwise; none
    when the outputs change per epoch (augmentation, unless forced; hints always)."""
    from compress.common.console import current

    if cfg.teacher_cache == "off" or not task.cacheable:
        return None
    if kd.hints:
        current().info("teacher cache: off (hints need the teacher's inner features); the teacher runs live")
        return None
    if augment_shift > 0 and cfg.teacher_cache != "force":
        current().info(f"teacher cache: off (random augmentation, augment_shift={augment_shift}, changes "
                       "the teacher's outputs each epoch); the teacher runs live (teacher_cache: force "
                       "caches them anyway)")
        return None
    scope = current_scope()
    if scope.cache_dir is None or scope.teacher is not teacher or not scope.data_key:
        return MemoryCache(len(train))
    key = teacher_cache_key(task, scope.teacher_sha256 or "", scope.data_key, train, cfg.teacher_topk,
                            str(amp))
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    return build_disk_cache(scope.cache_dir, key, task, teacher, train, device, cfg.teacher_topk, ctx)


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
