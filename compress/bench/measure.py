"""Models measured side by side on ONNX Runtime: latency interleaved (at each input length the
task times), and the task's quality in ORT, into typed ``ModelMeasurement`` rows.

The benchmark stage measures a run's models on the test split with it; the search measures its
trials on the validation split. MACs are counted on the ONNX graph that ships
(``compress.bench.macs``). Every raw latency sample is kept (``latency/NAME.npy``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from compress.artifacts import ModelArtifact, ModelMeasurement
from compress.common.files import atomic_write
from compress.config.rules import fuses_qdq, is_qdq, unfused_qdq
from compress.config.stages import BenchmarkConfig
from compress.errors import StageError
from compress.tasks.base import Task


def quality_count(ds: Dataset, limit: int | None) -> int:
    """How many samples of ``ds`` the quality is measured on: all, or the first ``limit``
    (``benchmark.max_samples``), as ``Task.arrays`` takes them."""
    return len(ds) if limit is None else min(limit, len(ds))


def ort_quality(task: Task, paths: list[Path], ds: Dataset, limit: int | None, opt_level: str,
                reference: int | None = None) -> tuple[list[dict[str, float]], int]:
    """The task's quality of each model in ORT on ``ds``, and the number of samples it was
    measured on; ``reference`` indexes the model (the teacher) the others are also measured
    against (agreement, or the embedding metrics)."""
    from compress.common.ort import make_session, run_batched
    from compress.tasks.base import ort_arrays

    outs, targets = [], None
    for p in paths:
        sess = make_session(p, 1, opt_level)
        feeds, targets = ort_arrays(task, ds, sess, limit)
        outs.append(run_batched(sess, feeds)[0])
    ref = outs[reference] if reference is not None else None
    return [task.quality(o, targets, ref) for o in outs], len(targets)


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
    # the length each model was really timed at: one exported with a fixed length runs at its own
    timed = [int(next(iter(f.values())).shape[task.sequence_axis]) if length else None
             for f in feeds]
    return measure_interleaved([m.path for m in models], feeds, target.threads, target.opt_level,
                               target.runs, target.warmup), timed


def _by_length(timed: dict, i: int) -> dict[str, dict[str, float]]:
    """Model ``i``'s latency at each input length it was timed at, the headline's first."""
    out: dict[str, dict[str, float]] = {}
    for found, lengths in timed.values():
        out.setdefault(f"seq{lengths[i]}", _stats(found[i]))
    return out


def _stats(r) -> dict[str, float]:
    return {k: round(getattr(r.stats, k), 5) for k in ("p50", "p90", "p99", "mean", "std")}


def benchmark_models(models: list[ModelArtifact], task: Task, ds: Dataset, cfg: BenchmarkConfig,
                     target, out_dir: Path, run_dir: Path, median: int | None = None,
                     eval_sets: dict[str, Dataset] | None = None,
                     probe=None) -> list[ModelMeasurement]:
    """Latency (interleaved, at each input length) and ORT quality on ``ds`` for each model."""
    from compress.bench.macs import onnx_macs

    if not fuses_qdq(target.opt_level):
        for m in models:
            if is_qdq(m.path):
                raise StageError("target.opt_level " + unfused_qdq(target.opt_level, f"QDQ model {m.name!r}"))
    lengths = timing_lengths(task, cfg, median)
    timed = {n: _time(models, task, ds, target, n) for n in lengths}
    runs = {n: found for n, (found, _) in timed.items()}
    ref = next((i for i, m in enumerate(models) if m.name == "teacher"), None)
    qualities, counted = ort_quality(task, [m.path for m in models], ds, cfg.max_samples,
                                     target.opt_level, ref)
    if probe is not None:  # data.probe: a linear probe on each model's frozen embeddings
        from compress.tasks.probe import probe_models

        for q, p in zip(qualities, probe_models(task, [m.path for m in models], probe,
                                                target.opt_level, ref), strict=True):
            q.update(p)
    extra = {name: ort_quality(task, [m.path for m in models], eset, None, target.opt_level, ref)[0]
             for name, eset in (eval_sets or {}).items()}
    out = []
    for i, (m, q) in enumerate(zip(models, qualities, strict=True)):
        r = runs[lengths[0]][i]
        samples = out_dir / "latency" / f"{m.name}.npy"
        atomic_write(samples, lambda p, r=r: _save_npy(p, np.asarray(r.samples_ms)))
        by_length = _by_length(timed, i) if lengths[0] else None
        out.append(ModelMeasurement(
            name=m.name, stage=m.meta.get("stage", ""),
            path=str(Path(m.path).resolve().relative_to(run_dir.resolve())), sha256=m.sha256,
            bytes=r.bytes, params=m.meta.get("params"), macs=onnx_macs(m.path).total,
            precision=m.precision, accuracy=task.headline(q), split="test", quality=q,
            task=task.name, metric=task.metric, higher_is_better=task.higher_is_better,
            latency_ms=_stats(r), threads=target.threads, opt_level=target.opt_level, runs=r.stats.n,
            quality_samples=counted,
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
