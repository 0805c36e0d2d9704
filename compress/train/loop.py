"""The one training loop: teacher training, distillation, pruning recovery and QAT all call ``fit_``.

It reads in the order it runs: ``fit_`` seeds, chooses precision once, readies the teacher (and
its output cache), the loader and the optimiser, resumes from a checkpoint when its scope has
one, runs the epochs (each ends with the task's headline metric on the validation split), and
leaves the model holding the best epoch's weights. The loss is the task's distillation loss
(plus FitNets hints) when a teacher is given, its plain loss otherwise. Batches are dicts of
named inputs.

Under torch.distributed (torchrun, ``--nproc``) the model is wrapped in DDP and each rank takes
its slice of every global batch. ``scope`` is what the engine knows about the stage around the
call (``TrainingScope``): where to checkpoint, whether to resume, how the teacher and the data
are keyed for the disk cache. A notebook passes none: no checkpoints, an in-memory cache.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compress.common.files import sha256_json
from compress.config.train import TrainConfig
from compress.tasks.base import Task, run_torch
from compress.train import distributed as dist
from compress.train.checkpoint import Checkpointer, EpochMetrics, TrainingScope, state_sha256
from compress.train.plan import KD, FitData, FitPlan, FitResult
from compress.train.steps import Best, EpochSums, FitState, Steps
from compress.train.teacher_cache import Indexed, MemoryCache, Taps, Teacher, build_disk_cache
from compress.train.teacher_cache import cache_key as teacher_cache_key

__all__ = ["KD", "FitData", "FitPlan", "FitResult", "TrainConfig", "fit_", "recalibrate_bn_",
           "evaluate_headline"]


# -- the loop --------------------------------------------------------------------------------

def fit_(model: nn.Module, task: Task, data: FitData, plan: FitPlan, kd: KD | None = None,
         scope: TrainingScope | None = None, extra_params: list[nn.Parameter] | None = None,
         ) -> FitResult:
    """Train ``model`` in place and leave it holding the best epoch's weights (by the task's
    headline metric on ``data.val``).

    Args:
        kd: distil from a teacher (None: the task's plain loss).
        scope: the engine's stage scope (checkpoints, resume, the teacher cache); None in a
            notebook.
        extra_params: more trained parameters outside the model (e.g. a projection a loss uses).
    """
    from compress.common.console import current
    from compress.common.console import progress as progress_bar

    cfg, device, scope = plan.cfg, plan.device, scope or TrainingScope()
    torch.manual_seed(plan.seed)
    model.to(device)
    amp = amp_dtype(cfg.precision, device)
    t, train = _prepare_teacher(task, kd, data, plan, amp, scope)
    loader = _loader(task, train, cfg.batch_size or data.batch_size, plan.seed, cfg, device)
    steps = Steps.build(task, model, t, kd, train, plan, data.augment_shift, extra_params, amp)
    steps.schedule(max(1, cfg.epochs * len(loader)))
    ck = _checkpointer(model, kd, data, plan, len(train), scope)
    st = FitState(Best(weights=copy.deepcopy(model.state_dict())))
    steps.gen = loader.generator
    saved = ck.load() if ck.enabled and scope.resume else None
    if saved is not None:
        st = steps.restore(saved, loader)
        where = f" (step {st.step} of epoch {st.epoch + 1})" if st.step else ""
        current().info(f"[{plan.desc}] resumed from checkpoint at epoch {st.epoch}{where}")
    ref = t.val_out if t else None
    bar = progress_bar(max(1, cfg.epochs * len(loader)), plan.desc, plan.progress and dist.world().main)
    bar.update(st.epoch * len(loader) + st.step)
    save = (lambda: ck.save(steps.snapshot(st))) if ck.enabled else (lambda: None)
    for epoch in range(st.epoch, cfg.epochs):
        t0 = time.perf_counter()
        mean_loss, n = steps.epoch(loader, bar, st, save)
        st.seen, st.seconds = st.seen + n, st.seconds + time.perf_counter() - t0
        score = evaluate_headline(task, model, data.val, device, ref)
        st.history.append({"epoch": epoch + 1, "loss": mean_loss, f"val_{task.metric}": score})
        bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}", **{f"val_{task.metric}": f"{score:.4f}"})
        current().event("epoch", loop=plan.desc, **st.history[-1])
        if scope.on_epoch is not None:
            scope.on_epoch(EpochMetrics(plan.desc, epoch + 1, cfg.epochs, mean_loss, task.metric,
                                        score, task.higher_is_better))
        if st.best.score is None or task.better(score, st.best.score):
            st.best = Best(score, epoch + 1, copy.deepcopy(model.state_dict()))
        st.epoch, st.step, st.sums = epoch + 1, 0, EpochSums()
        save()
    bar.close()
    steps.close()
    return _finish(model, st, cfg, lambda: evaluate_headline(task, model, data.val, device, ref))


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32). auto: bf16 on CUDA when supported, else fp16; fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _prepare_teacher(task: Task, kd: KD | None, data: FitData, plan: FitPlan,
                     amp: torch.dtype | None, scope: TrainingScope) -> tuple[Teacher | None, Dataset]:
    """The frozen teacher as the loop sees it, and the training set (indexed when its outputs
    are cached per sample)."""
    if kd is None:
        return None, data.train
    teacher, device = kd.teacher, plan.device
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    taps = Taps(teacher, [h for _, h in kd.hints]) if kd.hints else None
    val_out = run_torch(task, teacher, data.val, device)[0] if task.needs_reference else None
    cache = _teacher_cache(task, kd, data, plan, amp, scope)
    return Teacher(teacher, cache, taps, val_out), (Indexed(data.train) if cache is not None else data.train)


def _teacher_cache(task: Task, kd: KD, data: FitData, plan: FitPlan, amp: torch.dtype | None,
                   scope: TrainingScope):
    """Disk cache when the scope names the teacher and the data, memory cache otherwise; none
    when the outputs change per epoch (augmentation, unless forced; hints always)."""
    from compress.common.console import current

    cfg, shift = plan.cfg, data.augment_shift
    if cfg.teacher_cache == "off" or not task.cacheable:
        return None
    if kd.hints:
        current().info("teacher cache: off (hints need the teacher's inner features); the teacher runs live")
        return None
    if shift > 0 and cfg.teacher_cache != "force":
        current().info(f"teacher cache: off (random augmentation, augment_shift={shift}, changes "
                       "the teacher's outputs each epoch); the teacher runs live (teacher_cache: force "
                       "caches them anyway)")
        return None
    if scope.cache_dir is None or scope.teacher is not kd.teacher or not scope.data_key:
        return MemoryCache(len(data.train))
    key = teacher_cache_key(task, scope.teacher_sha256 or "", scope.data_key, data.train,
                            cfg.teacher_topk, str(amp))
    device = plan.device
    ctx = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    return build_disk_cache(scope.cache_dir, key, task, kd.teacher, data.train, device,
                            cfg.teacher_topk, ctx)


def _loader(task: Task, train: Dataset, global_batch: int, seed: int, cfg: TrainConfig,
            device: torch.device) -> DataLoader:
    """The global batch split over ranks; the sampler reshuffles by epoch from ``seed`` (and
    groups similar lengths with ``group_by_length``, for tasks whose inputs vary in length)."""
    lengths = task.lengths(train) if cfg.group_by_length else None
    sampler = dist.batch_sampler(len(train), global_batch, True, seed, lengths)
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


def _checkpointer(model: nn.Module, kd: KD | None, data: FitData, plan: FitPlan, n: int,
                  scope: TrainingScope) -> Checkpointer:
    """The loop's checkpoint in the scope's work folder, keyed by everything that shapes the run."""
    if scope.work_dir is None:
        return Checkpointer(None, plan.desc, "")
    teacher = kd.teacher if kd else None
    t_key = (scope.teacher_sha256 if teacher is not None and teacher is scope.teacher
             else state_sha256(teacher) if teacher is not None else None)
    key = sha256_json({"scope": scope.key, "desc": plan.desc, "cfg": plan.cfg.model_dump(mode="json"),
                       "n": n, "batch": data.batch_size, "shift": data.augment_shift, "seed": plan.seed,
                       "world": dist.world().size, "kd": kd.key() if kd else None, "teacher": t_key,
                       "init": state_sha256(model)})
    return Checkpointer(scope.work_dir, plan.desc, key)


def _finish(model: nn.Module, st: FitState, cfg: TrainConfig, score) -> FitResult:
    """Load the best epoch's weights (with no epochs: score the model as it is)."""
    best = st.best
    if cfg.epochs > 0:
        model.load_state_dict(best.weights)
    else:
        best = Best(score(), 0)
    model.eval()
    rate = st.seen / st.seconds if st.seconds > 0 else math.nan
    return FitResult(best.score, best.epoch, st.history, rate)


# -- measuring, also used by the stages ----------------------------------------------------------

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
