"""ONNX Runtime sessions and timed runs. Heavy imports stay inside the functions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.bench.stats import LatencyStats, summarize

OPT_LEVELS = ("disable", "basic", "extended", "all")
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def make_session(path: str | Path, threads: int = 1, opt_level: str = "all"):
    """A CPU session with a fixed thread count and graph optimization level."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def random_feeds(sess, dims: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs shaped from the model's inputs; dynamic dims come from ``dims`` (default batch=1,
    sequence=128, else 1). Integer inputs named like masks are all ones, other ints small ids."""
    dims = {"batch": 1, "batch_size": 1, "sequence": 128, "sequence_length": 128, **(dims or {})}
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else dims.get(str(d), 1) for d in inp.shape]
        dtype = _ORT_TYPES.get(inp.type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in inp.name:
            feeds[inp.name] = np.ones(shape, dtype=dtype)
        elif "type" in inp.name:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
        else:
            feeds[inp.name] = rng.integers(0, 1000, size=shape).astype(dtype)
    return feeds


def time_runs(sess, feeds: dict, runs: int, warmup: int = 0) -> np.ndarray:
    """Milliseconds per ``sess.run`` call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        sess.run(None, feeds)
    out = np.empty(runs)
    clock = time.perf_counter_ns
    for i in range(runs):
        t0 = clock()
        sess.run(None, feeds)
        out[i] = (clock() - t0) / 1e6
    return out


@dataclass
class Measurement:
    path: str
    threads: int
    opt_level: str
    stats: LatencyStats
    session_ms: float
    bytes: int
    samples_ms: list[float] = field(repr=False, default_factory=list)

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "threads": self.threads,
            "opt_level": self.opt_level,
            "latency_ms": {k: round(v, 5) for k, v in self.stats.as_dict().items() if k not in ("n", "throughput")},
            "runs": self.stats.n,
            "throughput_per_s": round(self.stats.throughput, 2),
            "session_create_ms": round(self.session_ms, 3),
            "bytes": self.bytes,
        }


def measure_interleaved(
    paths: Sequence[str | Path],
    feeds: Sequence[dict] | None = None,
    threads: int = 1,
    opt_level: str = "all",
    runs: int = 200,
    warmup: int = 20,
    block: int = 10,
) -> list[Measurement]:
    """Measure several models in interleaved blocks (A B C A B C ...) so drift hits all alike."""
    sessions, created = [], []
    for p in paths:
        t0 = time.perf_counter()
        sessions.append(make_session(p, threads, opt_level))
        created.append((time.perf_counter() - t0) * 1000)
    feeds = list(feeds) if feeds is not None else [random_feeds(s) for s in sessions]
    for s, f in zip(sessions, feeds, strict=True):
        time_runs(s, f, 0, warmup)
    samples: list[list[float]] = [[] for _ in paths]
    done = 0
    while done < runs:
        n = min(block, runs - done)
        for i, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            samples[i].extend(time_runs(s, f, n).tolist())
        done += n
    return [
        Measurement(str(p), threads, opt_level, summarize(ms), c, Path(p).stat().st_size, ms)
        for p, ms, c in zip(paths, samples, created, strict=True)
    ]


def ort_accuracy(path: str | Path, x: np.ndarray, y: np.ndarray, opt_level: str = "all") -> float:
    """Top-1 accuracy of an ONNX classifier in ONNX Runtime (batch size taken from the model)."""
    sess = make_session(path, threads=1, opt_level=opt_level)
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    bs = fixed or 256
    correct = 0
    for i in range(0, len(x), bs):
        xb = x[i : i + bs].astype(np.float32)
        n = len(xb)
        if fixed and n < fixed:
            xb = np.concatenate([xb, np.zeros((fixed - n, *xb.shape[1:]), np.float32)])
        pred = sess.run(None, {inp.name: xb})[0][:n].argmax(1)
        correct += int((pred == y[i : i + n]).sum())
    return correct / max(len(x), 1)
