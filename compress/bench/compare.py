"""Same-run A/B latency comparison: interleaved rounds, a bootstrap interval, a sequential verdict.

One round runs a block of calls of each model, in ABBA order (A B, then B A, ...) so that a
linear drift and any cost of going second hit both alike. The statistic is the ratio of the
medians of the per-block medians: a block that the OS preempted moves one value, not the result.
After ``min_rounds`` the interval is checked at rounds growing by ``look_growth`` (few looks, so
repeated peeking barely inflates the error rate) until it clears the tolerance line or time is up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.bench.latency import (
    npz_feeds,
    pick_clock,
    random_feeds,
    time_runs,
    timed_session,
)
from compress.bench.stats import (
    INCONCLUSIVE,
    SLOWER,
    LatencyStats,
    RatioCI,
    decide,
    median_ratio_ci,
    summarize,
)
from compress.common.numbers import percent
from compress.errors import InputError, StageError

RunBlock = Callable[[int], np.ndarray]  # calls -> milliseconds per call


@dataclass(frozen=True)
class CompareSettings:
    """How a comparison measures and when it stops. Defaults fit a model of p50 < 5 ms."""

    tolerance: float = 0.10
    max_seconds: float = 20.0  # the time cap of the measuring loop (warm-up not included)
    min_rounds: int = 20
    min_seconds: float = 1.0  # no verdict from less data: a short burst of load can fake one
    max_rounds: int = 1_000_000
    # short blocks interleave finely, so A and B see the same load; one call of a 1 ms model
    block_ms: float = 2.0  # target duration of one block of the slower model
    min_calls: int = 1
    max_calls: int = 1000
    warmup_seconds: float = 2.0  # at most; a quarter of max_seconds when that is less
    warmup_block_ms: float = 20.0
    steady_tol: float = 0.05
    confidence: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    look_growth: float = 1.25
    clock: str = "auto"  # auto: thread CPU time at 1 thread, wall time otherwise (pick_clock)


@dataclass
class Comparison:
    """The outcome of one interleaved run (``a`` is the candidate, ``b`` the reference)."""

    verdict: str
    ci: RatioCI
    rounds: int
    calls: int
    seconds: float
    a_blocks: list[float] = field(repr=False)
    b_blocks: list[float] = field(repr=False)
    a_stats: LatencyStats
    b_stats: LatencyStats


def calls_per_block(per_call_ms: float, settings: CompareSettings,
                    block_ms: float | None = None) -> int:
    """Enough calls that one block of the slower model lasts about ``block_ms``."""
    n = int(round((block_ms or settings.block_ms) / max(per_call_ms, 1e-6)))
    return max(settings.min_calls, min(settings.max_calls, n))


def sequential_rounds(
    run_a: RunBlock,
    run_b: RunBlock,
    calls: int,
    settings: CompareSettings,
    stop: Callable[[RatioCI], str | None] | None = None,
    base: tuple[list[float], list[float]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Comparison:
    """Measure rounds until ``stop(ci)`` names a verdict or the cap is hit (``inconclusive``).

    ``stop`` defaults to the tolerance rule of ``decide``. ``base`` holds an earlier run's block
    medians: the ratio is then normalized by that run's ratio (see ``median_ratio_ci``).
    """
    stop = stop or (lambda ci: decide(ci, settings.tolerance))
    a_blocks: list[float] = []
    b_blocks: list[float] = []
    a_all: list[np.ndarray] = []
    b_all: list[np.ndarray] = []
    t0 = clock()
    next_look = settings.min_rounds
    while True:
        if len(a_blocks) % 2 == 0:
            xa, xb = run_a(calls), run_b(calls)
        else:
            xb, xa = run_b(calls), run_a(calls)
        a_all.append(xa)
        b_all.append(xb)
        a_blocks.append(float(np.median(xa)))
        b_blocks.append(float(np.median(xb)))
        n = len(a_blocks)
        elapsed = clock() - t0
        capped = elapsed >= settings.max_seconds or n >= settings.max_rounds
        if (n < next_look or elapsed < settings.min_seconds) and not capped:
            continue
        ci = median_ratio_ci(a_blocks, b_blocks, *(base or (None, None)), settings.confidence,
                             settings.n_boot, settings.seed)
        enough = n >= settings.min_rounds and elapsed >= settings.min_seconds
        verdict = stop(ci) if enough else None
        if verdict or capped:
            return Comparison(verdict or INCONCLUSIVE, ci, n, calls, clock() - t0, a_blocks,
                              b_blocks, summarize(np.concatenate(a_all)),
                              summarize(np.concatenate(b_all)))
        next_look = max(n + 1, math.ceil(n * settings.look_growth))


def warm_interleaved(runs: list[RunBlock], settings: CompareSettings) -> list[float]:
    """Alternate blocks of every model until each one's block median stops moving.

    Blocks last about ``warmup_block_ms``, long enough for a steady median. Gives up after
    ``warmup_seconds`` (or a quarter of ``max_seconds``): on a loaded machine the median may
    never settle. Returns each model's last block median (ms per call), to size the blocks.
    """
    # a short comparison gets a short warm-up: it should not be mostly warm-up
    cap = min(settings.warmup_seconds, max(0.5, settings.max_seconds / 4))
    t_end = time.perf_counter() + cap
    prev = [float(np.median(r(5))) for r in runs]
    steady_in_a_row = 0
    while True:
        # each model gets its own block length, so a fast model's median is as steady as a slow one's
        cur = [float(np.median(r(calls_per_block(p, settings, settings.warmup_block_ms))))
               for r, p in zip(runs, prev, strict=True)]
        steady = all(abs(c - p) <= settings.steady_tol * p for c, p in zip(cur, prev, strict=True))
        steady_in_a_row = steady_in_a_row + 1 if steady else 0
        if steady_in_a_row >= 2 or time.perf_counter() > t_end:
            return cur
        prev = cur


def session_runner(sess, feeds: dict, clock: str = "wall") -> RunBlock:
    def run(n: int) -> np.ndarray:
        try:
            return time_runs(sess, feeds, n, clock=clock)
        except Exception as e:  # ORT raises its own exception types; keep the cause
            raise StageError(f"inference failed: {_first_line(e)}") from e

    return run


def open_model(path: str | Path | bytes, threads: int, opt_level: str):
    """``(session, creation ms)``; a missing or unreadable model file is an InputError (exit 2)."""
    if not isinstance(path, bytes):
        check_onnx_file(path)
    try:
        return timed_session(path, threads, opt_level)
    except Exception as e:  # ORT rejects invalid graphs with its own exception types
        raise InputError(f"{path}: ONNX Runtime cannot load it ({_first_line(e)})") from e


def check_onnx_file(path: str | Path) -> None:
    """Raise InputError with one clear line unless ``path`` is a readable ONNX model file."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file (expected an .onnx model)")
    try:
        model = onnx.load(str(path), format="protobuf", load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: not an ONNX model ({_first_line(e)})") from e
    # protobuf parses many byte strings leniently: a model has a graph with nodes and an opset
    if not model.opset_import or not model.graph.node:
        raise InputError(f"{path}: not an ONNX model (no graph nodes or opset)")


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else type(e).__name__


def model_feeds(sess, dims: dict[str, int] | None = None, inputs: str | Path | None = None) -> dict:
    return npz_feeds(sess, inputs) if inputs else random_feeds(sess, dims)


def compare_models(
    path_a: str | Path,
    path_b: str | Path,
    settings: CompareSettings | None = None,
    threads: int = 1,
    opt_level: str = "all",
    dims: dict[str, int] | None = None,
    inputs: str | Path | None = None,
) -> Comparison:
    """Is model A slower than model B? Both measured interleaved in this process."""
    settings = settings or CompareSettings()
    sa, _ = open_model(path_a, threads, opt_level)
    sb, _ = open_model(path_b, threads, opt_level)
    clock = pick_clock(settings.clock, threads)
    runs = [session_runner(sa, model_feeds(sa, dims, inputs), clock),
            session_runner(sb, model_feeds(sb, dims, inputs), clock)]
    per_call = warm_interleaved(runs, settings)
    calls = calls_per_block(max(per_call), settings)
    return sequential_rounds(runs[0], runs[1], calls, settings)


def describe(c: Comparison, a: str, b: str, tolerance: float) -> str:
    """One line: the verdict, the ratio and its interval, how long it took."""
    return (f"{c.verdict}: {a} takes {c.ci.ratio:.3f}x the time of {b} "
            f"({c.ci.confidence:.0%} CI {c.ci.low:.3f}-{c.ci.high:.3f}, tolerance {percent(tolerance)}; "
            f"{c.rounds} rounds x {c.calls} calls in {c.seconds:.1f} s)")


def is_failure(verdict: str, strict: bool = False) -> bool:
    return verdict == SLOWER or (strict and verdict == INCONCLUSIVE)

