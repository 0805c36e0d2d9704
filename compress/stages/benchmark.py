"""Benchmark every ONNX model of the run (the teacher's included) on ONNX Runtime, in one run.

MACs are counted on the ONNX graph that ships (``compress.bench.macs``), not by a PyTorch op
counter that misses subclassed and functional convolutions.

Latency is measured interleaved so drift hits all models alike, with the pipeline's ``target:``
settings; quality is measured by the task in ORT on the test split, on the very files that ship.
Every raw latency sample is kept (``latency/NAME.npy``) for the report's distributions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from compress.artifacts import ModelArtifact, ModelMeasurement, StageResult
from compress.bench.latency import pick_clock
from compress.common.console import current
from compress.common.files import atomic_write
from compress.config.stages import BenchmarkConfig, ExportConfig
from compress.errors import StageError
from compress.stage_reports import BenchmarkReport
from compress.stages.base import Stage, StageContext
from compress.tasks.base import Task


def is_qdq(path: str | Path) -> bool:
    import onnx

    from compress.bench.inspection import QDQ_OPS

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in QDQ_OPS for n in graph.node)


def ort_quality(task: Task, paths: list[Path], ds: Dataset, limit: int | None, opt_level: str,
                reference: int | None = None) -> list[dict[str, float]]:
    """The task's quality of each model in ORT on ``ds``; ``reference`` indexes the model (the
    teacher) the others are also measured against (agreement, or the embedding metrics)."""
    from compress.common.ort import make_session, run_batched
    from compress.tasks.base import ort_arrays

    outs, targets = [], None
    for p in paths:
        sess = make_session(p, 1, opt_level)
        feeds, targets = ort_arrays(task, ds, sess, limit)
        outs.append(run_batched(sess, feeds)[0])
    ref = outs[reference] if reference is not None else None
    return [task.quality(o, targets, ref) for o in outs]


def timing_lengths(task: Task, cfg: BenchmarkConfig, median: int | None) -> list[int | None]:
    """The input lengths latency is measured at (one ``None`` for tasks without sequences)."""
    if task.sequence_axis is None:
        return [None]
    lengths = [median if v == "median" else v for v in cfg.seq_lens]
    return list(dict.fromkeys(v for v in lengths if v))


def _time(models, task: Task, ds: Dataset, target, length: int | None):
    from compress.bench.latency import measure_interleaved
    from compress.common.ort import make_session, timing_feed
    from compress.tasks.base import ort_arrays

    feeds = []
    for m in models:
        sess = make_session(m.path, 1, "basic")
        feeds.append(timing_feed(sess, ort_arrays(task, Subset(ds, [0]), sess, seq_len=length)[0]))
    return measure_interleaved([m.path for m in models], feeds, target.threads, target.opt_level,
                               target.runs, target.warmup)


def _stats(r) -> dict[str, float]:
    return {k: round(getattr(r.stats, k), 5) for k in ("p50", "p90", "p99", "mean", "std")}


def benchmark_models(models: list[ModelArtifact], task: Task, ds: Dataset, cfg: BenchmarkConfig,
                     target, out_dir: Path, run_dir: Path, median: int | None = None,
                     eval_sets: dict[str, Dataset] | None = None,
                     probe=None) -> list[ModelMeasurement]:
    """Latency (interleaved, at each input length) and ORT quality on ``ds`` for each model."""
    from compress.bench.macs import onnx_macs

    if target.opt_level in ("disable", "basic"):
        for m in models:
            if is_qdq(m.path):
                raise StageError(f"target.opt_level {target.opt_level!r} leaves QDQ model {m.name!r} "
                                 "unfused and slower than fp32; use 'extended' or 'all'")
    lengths = timing_lengths(task, cfg, median)
    runs = {n: _time(models, task, ds, target, n) for n in lengths}
    ref = next((i for i, m in enumerate(models) if m.name == "teacher"), None)
    qualities = ort_quality(task, [m.path for m in models], ds, cfg.max_samples, target.opt_level, ref)
    if probe is not None:  # data.probe: a linear probe on each model's frozen embeddings
        from compress.tasks.probe import probe_models

        for q, p in zip(qualities, probe_models(task, [m.path for m in models], probe,
                                                target.opt_level, ref), strict=True):
            q.update(p)
    extra = {name: ort_quality(task, [m.path for m in models], eset, None, target.opt_level, ref)
             for name, eset in (eval_sets or {}).items()}
    out = []
    for i, (m, q) in enumerate(zip(models, qualities, strict=True)):
        r = runs[lengths[0]][i]
        samples = out_dir / "latency" / f"{m.name}.npy"
        atomic_write(samples, lambda p, r=r: _save_npy(p, np.asarray(r.samples_ms)))
        by_length = {f"seq{n}": _stats(runs[n][i]) for n in lengths} if lengths[0] else None
        out.append(ModelMeasurement(
            name=m.name, stage=m.meta.get("stage", ""),
            path=str(Path(m.path).resolve().relative_to(run_dir.resolve())), sha256=m.sha256,
            bytes=r.bytes, params=m.meta.get("params"), macs=onnx_macs(m.path).total,
            precision=m.precision, accuracy=task.headline(q), split="test", quality=q,
            task=task.name, metric=task.metric, higher_is_better=task.higher_is_better,
            latency_ms=_stats(r), threads=target.threads, opt_level=target.opt_level, runs=r.stats.n,
            samples=str(samples.relative_to(out_dir)), throughput_per_s=round(r.stats.throughput, 1),
            session_create_ms=round(r.session_ms, 2), latency_by_length=by_length,
            eval_sets={name: qs[i] for name, qs in extra.items()} or None, clock=r.clock))
    base = out[ref] if ref is not None else None
    for m in out:
        m.speedup_vs_teacher = round(base.p50 / m.p50, 3) if base else None
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a path would get ".npy" appended to the temp name
        np.save(f, array, allow_pickle=False)


def _with_torch_exports(models: list[ModelArtifact], ctx: StageContext):
    """The run's ONNX models plus an export of each torch model published for measurement (the
    distilled student before pruning), exported as the run's export stage exported the student:
    ``(models in publishing order, {name: file in the stage folder})``."""
    from compress.export.checked import export_checked

    torch_models = [m for m in ctx.published.values() if m.format == "torch" and m.module is not None]
    if not torch_models:
        return models, {}
    cfg = _export_settings(models, ctx.task)
    exported, out = {}, []
    for m in ctx.published.values():
        if m.format == "torch" and m.module is not None:
            rel = Path("models") / f"{m.name}.onnx"
            (ctx.stage_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            current().info(f"[{ctx.stage_name}] exporting {m.name} to measure it in ORT")
            export_checked(m.module, ctx.task, ctx.example(cfg.batch_size), ctx.stage_dir / rel, cfg,
                           ctx.data.test)
            out.append(ModelArtifact.from_onnx(m.name, ctx.stage_dir / rel, m.precision, **m.meta))
            exported[m.name] = str(rel)
        elif m.format == "onnx":
            out.append(m)
    return out, exported


def _export_settings(models: list[ModelArtifact], task: Task) -> ExportConfig:
    """The settings the run's export stage used (from its stage.json beside the exported file),
    so a model exported here is the same kind of graph as the student it is compared with."""
    from compress.common.files import read_json

    for m in models:
        record = read_json(Path(m.path).parent / "stage.json")
        if isinstance(record, dict) and record.get("kind") == "export":
            return ExportConfig.model_validate(record["config"])
    return ExportConfig(dynamic_batch=task.sequence_axis is not None)


class BenchmarkStage(Stage):
    kind = "benchmark"
    uses_target = True

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: BenchmarkConfig = self.cfg
        models = [m for m in ctx.published.values() if m.format == "onnx"]
        if not models:
            raise StageError("no ONNX model to benchmark: put an export stage before benchmark")
        models, exported = _with_torch_exports(models, ctx)
        median = ctx.data.info.preprocessing.get("median_tokens")
        current().info(f"[{ctx.stage_name}] timing {len(models)} models interleaved "
                       f"({ctx.target.runs} runs each, {pick_clock('auto', ctx.target.threads)} "
                       f"clock), then their quality on {len(ctx.data.test)} test samples")
        found = benchmark_models(models, ctx.task, ctx.data.test, cfg, ctx.target, ctx.stage_dir,
                                 ctx.run_dir, median, ctx.data.extra, ctx.data.probe)
        for m in found:  # relative to the run dir, where the stage folder lands on success
            m.samples = str(Path(ctx.stage_name) / m.samples)
            if m.name in exported:
                m.path = str(Path(ctx.stage_name) / exported[m.name])
        files = [str(Path("latency") / f"{m.name}.npy") for m in found] + list(exported.values())
        report = BenchmarkReport(models=[m.name for m in found], split="test",
                                 clock=found[0].clock if found else None)
        return StageResult(model, report,
                           files=files, measurements=found)
