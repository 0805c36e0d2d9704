"""ONNX Runtime sessions and timed runs. Heavy imports stay inside the functions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.bench.stats import LatencyStats, summarize
from compress.common.ort import DEFAULT_DIMS, make_session
from compress.errors import InputError

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


def timed_session(path: str | Path | bytes, threads: int = 1, opt_level: str = "all"):
    """``(session, milliseconds it took to create)``."""
    t0 = time.perf_counter()
    sess = make_session(path, threads, opt_level)
    return sess, (time.perf_counter() - t0) * 1000


def random_feeds(sess, dims: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs shaped from the model's inputs; dynamic dims come from ``dims`` (default batch=1,
    sequence=128, else 1). Integer inputs named like masks are all ones, other ints small ids."""
    dims = {**DEFAULT_DIMS, **(dims or {})}
    spec = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else dims.get(str(d), 1) for d in inp.shape]
        spec[inp.name] = {"dtype": np.dtype(_ORT_TYPES.get(inp.type, np.float32)).name, "shape": shape}
    return feeds_like(spec, seed)


def feeds_like(spec: dict[str, dict], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs from ``{name: {"dtype": ..., "shape": [...]}}`` (see ``feed_spec``)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, s in spec.items():
        dtype, shape = np.dtype(s["dtype"]), list(s["shape"])
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in name:
            feeds[name] = np.ones(shape, dtype=dtype)
        elif "type" in name or dtype == np.bool_:
            feeds[name] = np.zeros(shape, dtype=dtype)
        else:
            feeds[name] = rng.integers(0, 1000, size=shape).astype(dtype)
    return feeds


def feed_spec(feeds: dict[str, np.ndarray]) -> dict[str, dict]:
    """The dtype and shape of each input, JSON-ready (stored in baselines)."""
    return {k: {"dtype": v.dtype.name, "shape": list(v.shape)} for k, v in feeds.items()}


def npz_feeds(sess, path: str | Path) -> dict[str, np.ndarray]:
    """Inputs read from an .npz file, one array per model input, cast to the input's type."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (--inputs expects an .npz with one array per input)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from e
    feeds = {}
    for inp in sess.get_inputs():
        if inp.name not in arrays:
            raise InputError(f"{path}: no array named {inp.name!r} for model input "
                             f"{inp.name!r} (has: {', '.join(sorted(arrays)) or 'nothing'})")
        a = arrays[inp.name]
        fixed = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
        if len(fixed) != a.ndim or any(f is not None and f != n for f, n in zip(fixed, a.shape, strict=True)):
            raise InputError(f"{path}: array {inp.name!r} has shape {list(a.shape)}, model expects "
                             f"{[d if d is not None else '?' for d in fixed]}")
        feeds[inp.name] = a.astype(_ORT_TYPES.get(inp.type, np.float32), copy=False)
    return feeds


def time_runs(sess, feeds: dict, runs: int, warmup: int = 0, clock: str = "wall") -> np.ndarray:
    """Milliseconds per ``sess.run`` call, after ``warmup`` untimed calls.

    ``clock="cpu"`` times the calling thread's CPU time instead of wall time. With one ORT
    thread the whole inference runs on the calling thread, so this drops the time the OS had the
    thread preempted: on a loaded machine it is far steadier (used for comparisons, see FACTS).
    It undercounts work done on other threads, so it is only meaningful at ``threads=1``.
    """
    for _ in range(warmup):
        sess.run(None, feeds)
    out = np.empty(runs)
    tick = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
    for i in range(runs):
        t0 = tick()
        sess.run(None, feeds)
        out[i] = (tick() - t0) / 1e6
    return out


def pick_clock(clock: str, threads: int) -> str:
    """``auto`` means the CPU clock at one thread (steadier), wall time otherwise."""
    if clock == "auto":
        return "cpu" if threads == 1 else "wall"
    return clock


def warm_until_steady(sess, feeds: dict, calls: int = 10, rel_tol: float = 0.03,
                      max_seconds: float = 3.0, min_blocks: int = 3) -> float:
    """Run blocks of ``calls`` until two successive block medians agree within ``rel_tol``.

    First calls pay for allocation, caches and lazy kernel selection; steady state is when the
    median stops moving. Gives up after ``max_seconds``. Returns the last block's median (ms).
    """
    t_end = time.perf_counter() + max_seconds
    prev = float(np.median(time_runs(sess, feeds, calls)))
    blocks = 1
    while True:
        cur = float(np.median(time_runs(sess, feeds, calls)))
        blocks += 1
        if blocks >= min_blocks and abs(cur - prev) <= rel_tol * prev:
            return cur
        if time.perf_counter() > t_end:
            return cur
        prev = cur


@dataclass
class Measurement:
    path: str
    threads: int
    opt_level: str
    stats: LatencyStats
    session_ms: float
    bytes: int
    samples_ms: list[float] = field(repr=False, default_factory=list)
    clock: str = "wall"  # "cpu": the calling thread's CPU time (see time_runs), "wall": elapsed

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
            "clock": self.clock,
        }


def measure_interleaved(
    paths: Sequence[str | Path],
    feeds: Sequence[dict] | None = None,
    threads: int = 1,
    opt_level: str = "all",
    runs: int = 200,
    warmup: int = 20,
    block: int = 10,
    clock: str = "auto",
    max_block: int = 500,
) -> list[Measurement]:
    """Measure several models in interleaved blocks (A B C A B C ...) so drift hits all alike.

    ``clock="auto"`` times the calling thread's CPU time at one thread (a busy machine preempts
    the thread without changing it) and wall time otherwise; ``Measurement.clock`` says which.
    Blocks last about as long for every model: the slowest runs ``block`` calls per block, a
    model k times faster about k times as many (at most ``max_block``). Each model gets at least
    ``runs`` samples. Equal blocks of calls made a small model's block short beside a big one's,
    so a good share of its calls ran on caches the big model had just evicted: its p50 flipped
    between the warm and the cold cost from run to run on a loaded machine.
    """
    clock = pick_clock(clock, threads)
    sessions, created = [], []
    for p in paths:
        t0 = time.perf_counter()
        sessions.append(make_session(p, threads, opt_level))
        created.append((time.perf_counter() - t0) * 1000)
    feeds = list(feeds) if feeds is not None else [random_feeds(s) for s in sessions]
    per_call = [float(np.median(time_runs(s, f, max(warmup, 1), clock=clock)))
                for s, f in zip(sessions, feeds, strict=True)]
    speed = [max(1.0, max(per_call) / max(c, 1e-6)) for c in per_call]  # 1 for the slowest
    samples: list[list[float]] = [[] for _ in paths]
    done = 0
    while done < runs:  # the slowest model gets exactly ``runs`` samples, the others more
        n = min(block, runs - done)
        for i, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            calls = max(n, min(max_block, round(n * speed[i])))
            samples[i].extend(time_runs(s, f, calls, clock=clock).tolist())
        done += n
    return [
        Measurement(str(p), threads, opt_level, summarize(ms), c, Path(p).stat().st_size, ms, clock)
        for p, ms, c in zip(paths, samples, created, strict=True)
    ]


def ort_accuracy(path: str | Path, x: np.ndarray, y: np.ndarray, opt_level: str = "all") -> float:
    """Top-1 accuracy of a one-input ONNX classifier in ONNX Runtime."""
    from compress.common.ort import run_batched

    sess = make_session(path, threads=1, opt_level=opt_level)
    out = run_batched(sess, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    return float((out.argmax(1) == y).mean()) if len(x) else 0.0
