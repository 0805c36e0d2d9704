"""Prune channels with torch-pruning's DepGraph, aimed at a ratio, a MACs budget or a measured
ONNX Runtime latency budget; re-estimate BatchNorm and recover by training after every step.

Three questions, three objects: DepGraph says what is coupled, an importance says what matters,
the step schedule says how much to cut. Budget targets close the loop with the runtime: after each
step the model is exported, its MACs counted on that graph (the report's one MAC counter,
compress.bench.macs) and, for latency, timed on ORT with the pipeline's target settings.
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from compress.artifacts import ModelArtifact, StageResult, count_params, save_torch
from compress.bench.macs import count_macs
from compress.config.stages import PruneConfig, TargetConfig
from compress.config.train import SoftTargets
from compress.data.sources import DataBundle
from compress.errors import ConfigError, GateError, StageError
from compress.models.pruning import Example, capped_indices, make_pruner, output_shapes
from compress.models.widths import record_widths, sync_attention_heads_
from compress.stage_reports import PruneReport, PruneStep
from compress.stages.base import Stage, StageContext
from compress.tasks.base import Task, run_torch
from compress.train.checkpoint import TrainingScope
from compress.train.loop import (
    KD,
    FitData,
    FitPlan,
    TrainConfig,
    evaluate_headline,
    fit_,
    recalibrate_bn_,
)
from compress.train.onnx_teacher import teacher_module


@dataclass(kw_only=True)
class Recovery:
    """What the schedule needs beyond the model: data for BN/recovery/taylor, a KD teacher, timing.
    Every field is named at the call (``Recovery(task=..., data=...)``); each has a default."""

    task: Task | None = None
    data: DataBundle | None = None
    teacher: nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    target: TargetConfig = field(default_factory=TargetConfig)
    workdir: Path | None = None
    seed: int = 0
    progress: bool = False
    scope: TrainingScope | None = None  # the engine's, for fit_ (None in a notebook)
    _val_ref: torch.Tensor | None = field(default=None, init=False, repr=False)

    def headline(self, model: nn.Module) -> float:
        """The task's headline quality of ``model`` on the validation split (it picks nothing here)."""
        if self.task.needs_reference and self.teacher is not None and self._val_ref is None:
            self._val_ref = run_torch(self.task, self.teacher, self.data.val)[0]  # once per schedule
        return evaluate_headline(self.task, model, self.data.val, reference=self._val_ref)


@dataclass
class PruneOutcome:
    model: nn.Module
    trajectory: list[PruneStep]


def prune_channels(
    model: nn.Module, example_inputs: Example, cfg: PruneConfig, recovery: Recovery | None = None,
    where: str = "prune",
) -> nn.Module:
    """Prune ``model`` in place to ``cfg``'s target and return it.

    Without ``recovery`` data, steps prune only (no BN re-estimate, no training, no accuracy).
    """
    return prune_schedule_(model, example_inputs, cfg, recovery or Recovery(), where).model


def prune_schedule_(
    model: nn.Module, example: Example, cfg: PruneConfig, rec: Recovery, where: str = "prune"
) -> PruneOutcome:
    """Run the step schedule in place; returns the model and the per-step trajectory."""
    if cfg.importance == "taylor" and rec.data is None:
        raise ConfigError(f"{where}.importance: 'taylor' needs training data for its gradients")
    timed = cfg.target == "latency_ms" or cfg.measure_latency
    if timed and not isinstance(example, torch.Tensor | dict):
        if cfg.target == "latency_ms":
            raise ConfigError(f"{where}.latency_ms: latency targets need named tensor inputs")
        timed = False
    model.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        meter = _Meter(example, Path(rec.workdir or tmp), rec.target, cfg.exporter, timed)
        return _run_steps(model, example, cfg, rec, where, meter)


def _run_steps(model, example, cfg: PruneConfig, rec: Recovery, where: str, meter: _Meter) -> PruneOutcome:
    out_shapes = output_shapes(model, example)
    row0 = meter.measure(model, 0, 0.0)
    if rec.data is not None:
        row0.acc_recovered = rec.headline(model)
    trajectory = [row0]
    budget = _budget(cfg, row0.macs)
    if budget is not None and _met(cfg, row0, budget):
        return PruneOutcome(model, trajectory)  # already within budget: nothing to cut

    final = cfg.ratio if cfg.target == "ratio" else cfg.max_ratio
    n_steps = cfg.steps if cfg.target == "ratio" else math.ceil(cfg.max_ratio / cfg.step_ratio - 1e-9)
    pruner = make_pruner(model, example, cfg, final, n_steps, where)
    for k in range(1, n_steps + 1):
        if cfg.importance == "taylor":
            _accumulate_grads(model, rec, cfg.taylor_batches)
        for group in pruner.step(interactive=True):
            idxs = capped_indices(group, pruner, cfg)
            if idxs is None:
                group.prune()
            elif idxs:
                group.prune(idxs)
        model.zero_grad(set_to_none=True)
        sync_attention_heads_(model, pruner.num_heads)
        shapes = output_shapes(model, example)
        if shapes != out_shapes:
            raise StageError(f"pruning changed the output shapes {out_shapes} -> {shapes}; add the "
                             f"layers that produce the outputs to {where}.ignore")
        row = meter.measure(model, k, round(final * k / n_steps, 4))
        _recover(model, cfg, rec, row, k)
        trajectory.append(row)
        if budget is not None and _met(cfg, row, budget):
            return PruneOutcome(model, trajectory)
    if budget is not None:
        _unreachable(cfg, trajectory, budget, where)
    return PruneOutcome(model, trajectory)


def _recover(model: nn.Module, cfg: PruneConfig, rec: Recovery, row: PruneStep, k: int) -> None:
    data = rec.data
    if data is None:
        return
    row.acc_pruned = rec.headline(model)
    if cfg.bn_batches:
        recalibrate_bn_(model, rec.task, data.train, batches=cfg.bn_batches, batch_size=data.batch_size)
    row.acc_bn = rec.headline(model)
    if cfg.epochs == 0:
        row.acc_recovered = row.acc_bn
        return
    teacher = rec.teacher if cfg.recovery == "kd" else None
    train_cfg = TrainConfig.of(cfg)
    result = fit_(model, rec.task, FitData.of(data),
                  FitPlan(train_cfg, rec.device, rec.seed + k, f"prune step {k}", rec.progress),
                  KD(teacher, SoftTargets.of(cfg)) if teacher is not None else None, scope=rec.scope)
    model.cpu().eval()
    row.acc_recovered = result.best_val
    row.history = result.history


def _accumulate_grads(model: nn.Module, rec: Recovery, batches: int) -> None:
    model.zero_grad(set_to_none=True)
    model.eval()  # BN in eval: gradients of the deployed function, not of batch statistics
    task, data = rec.task, rec.data
    for i, (inputs, target) in enumerate(task.loader(data.train, data.batch_size, shuffle=True)):
        if i >= batches:
            break
        task.loss(task.forward(model, inputs), target).backward()


def _budget(cfg: PruneConfig, base_macs: int) -> float | None:
    if cfg.target == "macs":
        return cfg.macs * base_macs if cfg.macs <= 1 else cfg.macs
    return cfg.latency_ms


def _met(cfg: PruneConfig, row: PruneStep, budget: float) -> bool:
    return (row.macs if cfg.target == "macs" else row.p50_ms) <= budget


def _unreachable(cfg: PruneConfig, rows: list[PruneStep], budget: float, where: str) -> None:
    if cfg.target == "macs":
        best = min(rows, key=lambda r: r.macs)
        raise GateError(
            f"{where}.macs: budget {budget:,.0f} MACs not reachable within max_ratio {cfg.max_ratio}: "
            f"lowest {best.macs:,} MACs at ratio {best.ratio:.2f}"
        )
    best = min(rows, key=lambda r: r.p50_ms)
    raise GateError(
        f"{where}.latency_ms: budget {budget:g} ms not reachable within max_ratio {cfg.max_ratio}: "
        f"lowest p50 {best.p50_ms:.4f} ms at ratio {best.ratio:.2f}"
    )


class _Meter:
    """Exports each step to ONNX once: its MACs are counted on that graph and, when ``timed``,
    it is timed interleaved with the unpruned model, so every step's speedup comes from one
    measurement."""

    def __init__(self, example: Example, workdir: Path, target: TargetConfig, exporter: str, timed: bool):
        from compress.export.torch_onnx import INPUT_NAME

        self.named = example if isinstance(example, dict) else {INPUT_NAME: example}
        self.example, self.workdir, self.target, self.exporter = example, workdir, target, exporter
        self.timed = timed
        self.base: Path | None = None  # the unpruned model's ONNX, timed beside every step

    def measure(self, model: nn.Module, step: int, ratio: float) -> PruneStep:
        path = self.workdir / f"step{step}.onnx"
        macs = count_macs(model, self.example, self.exporter, path)
        row = PruneStep(step=step, ratio=ratio, params=count_params(model), macs=macs)
        if self.timed:
            row.p50_ms, row.speedup = self._time(path)
        return row

    def _time(self, path: Path) -> tuple[float, float]:
        from compress.bench.latency import measure_interleaved

        paths = [path] if self.base is None else [self.base, path]
        b = self.target
        feeds = [{k: v.numpy() for k, v in self.named.items()}] * len(paths)
        res = measure_interleaved(paths, feeds, b.threads, b.opt_level, b.runs, b.warmup)
        if self.base is None:
            self.base = path
            return res[0].stats.p50, 1.0
        return res[1].stats.p50, res[0].stats.p50 / res[1].stats.p50


def count(model: nn.Module, example: Example) -> tuple[int, int]:
    """(MACs counted on the exported ONNX graph, params)."""
    return count_macs(model, example), count_params(model)


class PruneStage(Stage):
    kind = "prune"
    uses_target = True  # latency targets and per-step timing measure as the target says

    def trains(self) -> bool:
        return self.cfg.epochs > 0

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: PruneConfig = self.cfg
        if model.spec is None:
            raise StageError(f"{model.name!r} has no spec to rebuild it from; cannot save pruned widths")
        net = copy.deepcopy(model.module).cpu().eval()  # the input artifact stays unpruned
        teacher = teacher_module(ctx.teacher) if cfg.recovery == "kd" else None
        rec = Recovery(task=ctx.task, data=ctx.data, teacher=teacher, device=ctx.device,
                       target=ctx.target, seed=ctx.seed, progress=ctx.progress, scope=ctx.scope)
        named = ctx.example()
        example = next(iter(named.values())) if len(named) == 1 else named
        outcome = prune_schedule_(net, example, cfg, rec, ctx.where)
        first, last = outcome.trajectory[0], outcome.trajectory[-1]
        spec = {**model.spec, "widths": record_widths(net)}
        meta = {"params": last.params, "macs": last.macs, "stage": ctx.stage_name}
        art = save_torch(ModelArtifact(f"{model.name}-pruned", "torch", net, spec, meta=meta), ctx.stage_dir)
        report = PruneReport(
            target={cfg.target: getattr(cfg, cfg.target)}, ratio=last.ratio,
            params_before=first.params, params=last.params, macs_before=first.macs, macs=last.macs,
            p50_ms_before=first.p50_ms, p50_ms=last.p50_ms, speedup=last.speedup,
            val_before=first.acc_recovered, val=last.acc_recovered, metric=ctx.task.metric,
            threads=ctx.target.threads, opt_level=ctx.target.opt_level, trajectory=outcome.trajectory,
            histories=[r.history for r in outcome.trajectory[1:]],
            notes=[_summary(first, last, ctx.target.threads)],
        )
        return StageResult(art, report)


def _summary(first: PruneStep, last: PruneStep, threads: int) -> str:
    if last.params == first.params:
        return "nothing pruned: no layer has channels to spare at this ratio, round_to and max_ratio"
    text = f"channels -{last.ratio:.0%}: MACs {first.macs / 1e6:.2f}M -> {last.macs / 1e6:.2f}M"
    if last.p50_ms is not None:
        text += (f", ORT p50 {first.p50_ms:.3f} -> {last.p50_ms:.3f} ms ({last.speedup:.2f}x, "
                 f"{threads} thread(s))")
    return text

