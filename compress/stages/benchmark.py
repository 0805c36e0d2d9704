"""Benchmark every ONNX model of the run (the teacher's included) on ONNX Runtime, in one run.

MACs are counted on the ONNX graph that ships (``compress.runtime.macs``), not by a PyTorch op
counter that misses subclassed and functional convolutions.

Latency is measured interleaved so drift hits all models alike, with the pipeline's ``target:``
settings; quality is measured by the task in ORT on the test split, on the very files that ship.
Every raw latency sample is kept (``latency/NAME.npy``) for the report's distributions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.artifacts import ModelArtifact, ModelMeasurement, StageResult
from compress.errors import StageError
from compress.runtime.files import atomic_write
from compress.stages.base import Stage, StageContext
from compress.stages.configs import BenchmarkConfig
from compress.tasks.base import Task


def is_qdq(path: str | Path) -> bool:
    import onnx

    from compress.bench.inspection import QDQ_OPS

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in QDQ_OPS for n in graph.node)


def ort_quality(task: Task, paths: list[Path], feeds: dict[str, np.ndarray], targets: np.ndarray,
                opt_level: str, reference: int | None = None) -> list[dict[str, float]]:
    """The task's quality of each model in ORT; ``reference`` indexes the model (the teacher) whose
    outputs the others are measured against, for tasks that need one."""
    from compress.runtime.ort import make_session, run_batched

    outs = [run_batched(make_session(p, 1, opt_level), feeds)[0] for p in paths]
    ref = outs[reference] if reference is not None else None
    return [task.quality(o, targets, ref) for o in outs]


def benchmark_models(models: list[ModelArtifact], task: Task, feeds: dict[str, np.ndarray],
                     targets: np.ndarray, target, out_dir: Path, run_dir: Path) -> list[ModelMeasurement]:
    """Latency (interleaved) and ORT quality on test data for each ONNX model."""
    from compress.bench.latency import measure_interleaved
    from compress.runtime.macs import onnx_macs
    from compress.runtime.ort import make_session, timing_feed

    if target.opt_level in ("disable", "basic"):
        for m in models:
            if is_qdq(m.path):
                raise StageError(f"target.opt_level {target.opt_level!r} leaves QDQ model {m.name!r} "
                                 "unfused and slower than fp32; use 'extended' or 'all'")
    timing = [timing_feed(make_session(m.path, 1, "basic"), feeds) for m in models]
    results = measure_interleaved([m.path for m in models], timing, target.threads, target.opt_level,
                                  target.runs, target.warmup)
    ref = next((i for i, m in enumerate(models) if m.name == "teacher"), None)
    # every model is also measured against the teacher (agreement), where the teacher is here
    qualities = ort_quality(task, [m.path for m in models], feeds, targets, target.opt_level, ref)
    out = []
    for m, r, q in zip(models, results, qualities, strict=True):
        samples = out_dir / "latency" / f"{m.name}.npy"
        atomic_write(samples, lambda p, r=r: _save_npy(p, np.asarray(r.samples_ms)))
        out.append(ModelMeasurement(
            name=m.name, stage=m.meta.get("stage", ""),
            path=str(Path(m.path).resolve().relative_to(run_dir.resolve())), sha256=m.sha256,
            bytes=r.bytes, params=m.meta.get("params"), macs=onnx_macs(m.path).total,
            precision=m.precision, accuracy=task.headline(q), split="test", quality=q,
            task=task.name, metric=task.metric, higher_is_better=task.higher_is_better,
            latency_ms={k: round(getattr(r.stats, k), 5) for k in ("p50", "p90", "p99", "mean", "std")},
            threads=target.threads, opt_level=target.opt_level, runs=r.stats.n,
            samples=str(samples.relative_to(out_dir)), throughput_per_s=round(r.stats.throughput, 1),
            session_create_ms=round(r.session_ms, 2)))
    base = out[ref] if ref is not None else None
    for m in out:
        m.speedup_vs_teacher = round(base.p50 / m.p50, 3) if base else None
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a path would get ".npy" appended to the temp name
        np.save(f, array, allow_pickle=False)


class BenchmarkStage(Stage):
    kind = "benchmark"
    uses_target = True

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: BenchmarkConfig = self.cfg
        models = [m for m in ctx.published.values() if m.format == "onnx"]
        if not models:
            raise StageError("no ONNX model to benchmark: put an export stage before benchmark")
        feeds, targets = ctx.task.arrays(ctx.data.test, cfg.max_samples)
        found = benchmark_models(models, ctx.task, feeds, targets, ctx.target, ctx.stage_dir, ctx.run_dir)
        for m in found:  # relative to the run dir, where the stage folder lands on success
            m.samples = str(Path(ctx.stage_name) / m.samples)
        files = [str(Path("latency") / f"{m.name}.npy") for m in found]
        return StageResult(model, {"models": [m.name for m in found], "split": "test"},
                           files=files, measurements=found)
