"""Benchmark every ONNX model of the run (the teacher's included) on ONNX Runtime, in one run.

Latency is measured interleaved so drift hits all models alike; accuracy is measured in ORT on the
validation set, on the very files that ship.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from compress.artifacts import ModelArtifact, StageResult
from compress.bench.latency import measure_interleaved, ort_accuracy
from compress.errors import StageError
from compress.stages.base import Stage, StageConfig, StageContext


class BenchmarkConfig(StageConfig):
    threads: int = Field(1, ge=1, le=256, description="ORT intra-op threads (1 is the stable figure).")
    opt_level: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ORT graph optimization level. QDQ int8 models need extended or all."
    )
    runs: int = Field(300, ge=10, le=1_000_000, description="Timed runs per model.")
    warmup: int = Field(30, ge=0, le=100_000, description="Untimed runs per model first.")


def is_qdq(path: str | Path) -> bool:
    import onnx

    from compress.bench.inspection import QDQ_OPS

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in QDQ_OPS for n in graph.node)


def benchmark_models(
    models: list[ModelArtifact], x, y, cfg: BenchmarkConfig, run_dir: Path
) -> list[dict]:
    """Latency (interleaved) and ORT accuracy for each ONNX model, as report.json entries."""
    low = cfg.opt_level in ("disable", "basic")
    for m in models:
        if low and is_qdq(m.path):
            raise StageError(
                f"opt_level {cfg.opt_level!r} leaves QDQ model {m.name!r} unfused and slower than "
                "fp32; use 'extended' or 'all'"
            )
    sample = x[:1]
    feeds = []
    for m in models:
        from compress.bench.latency import make_session

        inp = make_session(m.path, 1, "basic").get_inputs()[0]
        batch = inp.shape[0] if isinstance(inp.shape[0], int) else 1
        feeds.append({inp.name: x[:batch].astype("float32") if batch > 1 else sample.astype("float32")})
    results = measure_interleaved(
        [m.path for m in models], feeds, cfg.threads, cfg.opt_level, cfg.runs, cfg.warmup
    )
    entries = []
    for m, r in zip(models, results, strict=True):
        entries.append({
            "name": m.name,
            "stage": m.meta.get("stage", ""),
            "path": str(Path(m.path).resolve().relative_to(run_dir.resolve())),
            "sha256": m.sha256,
            "bytes": r.bytes,
            "params": m.meta.get("params"),
            "macs": m.meta.get("macs"),
            "precision": m.precision,
            "accuracy": ort_accuracy(m.path, x, y, cfg.opt_level),
            "latency_ms": {k: round(getattr(r.stats, k), 5) for k in ("p50", "p90", "p99", "mean", "std")},
            "throughput_per_s": round(r.stats.throughput, 1),
            "session_create_ms": round(r.session_ms, 2),
            "threads": cfg.threads,
            "opt_level": cfg.opt_level,
            "runs": r.stats.n,
        })
    base = next((e for e in entries if e["name"] == "teacher"), None)
    for e in entries:
        if base:
            e["speedup_vs_teacher"] = round(base["latency_ms"]["p50"] / e["latency_ms"]["p50"], 3)
    return entries


class BenchmarkStage(Stage):
    kind = "benchmark"
    Config = BenchmarkConfig
    accepts = ("torch", "onnx")

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        models = [m for m in ctx.published.values() if m.format == "onnx"]
        if not models:
            raise StageError("no ONNX model to benchmark: put an export stage before benchmark")
        x, y = ctx.data.val_arrays()
        entries = benchmark_models(models, x, y, self.cfg, ctx.run_dir)
        return StageResult(model, {"models": entries})


STAGE = BenchmarkStage
