"""Summary statistics of latency samples (milliseconds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    n: int
    throughput: float  # inferences per second, from the mean

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(ms: np.ndarray | list[float], batch: int = 1) -> LatencyStats:
    """Percentiles use linear interpolation (numpy's default); std is the sample std (ddof=1)."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timings")
    mean = float(a.mean())
    return LatencyStats(
        p50=float(np.percentile(a, 50)),
        p90=float(np.percentile(a, 90)),
        p99=float(np.percentile(a, 99)),
        mean=mean,
        std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        min=float(a.min()),
        n=int(a.size),
        throughput=1000.0 * batch / mean if mean > 0 else float("inf"),
    )


# -- comparing two latencies ------------------------------------------------------------------

SLOWER = "slower"
NOT_SLOWER = "not slower"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class RatioCI:
    """A latency ratio (candidate / reference; above 1 means slower) and its bootstrap interval."""

    ratio: float
    low: float
    high: float
    confidence: float
    rounds: int

    def as_dict(self) -> dict:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}


def median_ratio_ci(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    base_a: np.ndarray | list[float] | None = None,
    base_b: np.ndarray | list[float] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> RatioCI:
    """Ratio of medians ``median(a) / median(b)`` with a percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` are the block medians of round ``i`` of an interleaved run. The
    bootstrap resamples whole rounds, so the pairing of A and B (both saw the same drift) and
    any correlation inside a block are kept. With ``base_a``/``base_b`` (the rounds of an earlier
    run) the statistic becomes ``(median(a)/median(b)) / (median(base_a)/median(base_b))`` and
    the earlier run's rounds are resampled independently, so its own noise widens the interval.
    The seed is fixed: the same timings always give the same interval.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0 or a.shape != b.shape:
        raise ValueError(f"need paired, non-empty rounds (got {a.shape} and {b.shape})")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    ratio = float(np.median(a) / np.median(b))
    if base_a is not None and base_b is not None:
        ba, bb = np.asarray(base_a, np.float64), np.asarray(base_b, np.float64)
        if ba.size == 0 or ba.shape != bb.shape:
            raise ValueError(f"need paired, non-empty base rounds (got {ba.shape} and {bb.shape})")
        jdx = rng.integers(0, ba.size, size=(n_boot, ba.size))
        boot = boot / (np.median(ba[jdx], axis=1) / np.median(bb[jdx], axis=1))
        ratio /= float(np.median(ba) / np.median(bb))
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return RatioCI(ratio, float(low), float(high), confidence, int(a.size))


def fastest_ratio_ci(a: np.ndarray | list[float], b: np.ndarray | list[float],
                     confidence: float = 0.95, n_boot: int = 1000, seed: int = 0) -> RatioCI:
    """Ratio of the fastest block medians, ``min(a) / min(b)``, with a bootstrap over rounds.

    On a busy machine every block is slowed by whatever else thrashes the caches, and by an
    amount that changes from minute to minute and hits two graphs differently; the fastest of
    20 or more blocks is each model's time with the least of it. Over five baselines (4 session
    pairs in each of 3 fresh processes, load average 5-13 on a 2-core AMD EPYC VM) the process
    means of this ratio moved 0.4-1.3% (sd), the median of per-round ratios 0.4-4.6% and the
    ratio of medians 0.9-6.0%. Rounds are resampled in pairs; the interval is rough (a
    minimum's bootstrap is lumpy), so the check leans on the spread between sessions as well.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0 or a.shape != b.shape:
        raise ValueError(f"need paired, non-empty rounds (got {a.shape} and {b.shape})")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    boot = a[idx].min(axis=1) / b[idx].min(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return RatioCI(float(a.min() / b.min()), float(low), float(high), confidence, int(a.size))


def decide(ci: RatioCI | ShiftCI, tolerance: float) -> str | None:
    """``slower`` if the whole interval lies above ``1 + tolerance``, ``not slower`` if it lies
    below; None while it straddles the line (measure more, or call it inconclusive at the cap)."""
    line = 1.0 + tolerance
    if ci.low > line:
        return SLOWER
    if ci.high < line:
        return NOT_SLOWER
    return None


# -- a baseline check across sessions and processes --------------------------------------------

# Floors of the spread of one session pair's log ratio (model / reference, fastest blocks),
# from `benchmarks/latency_false_alarms.py` on a 2-core AMD EPYC VM with two busy loops and other
# jobs (load average 4-13): fresh processes moved it 0.0-1.3% (sd; 5 baselines and 2 spread runs
# of 3-4 processes x 4 pairs), and pairs inside one process 0.5-3.7% (7.2% once, with one pair
# in a slow mode). A baseline records its own spread; the floors keep a lucky, quiet baseline
# from making the check overconfident (2%: above every process spread seen).
PROCESS_SPREAD = 0.02
SESSION_SPREAD = 0.02


@dataclass(frozen=True)
class ShiftCI:
    """How far a model moved against its baseline, relative to the reference, across sessions.

    ``ratio`` is ``exp(mean log ratio now - mean log ratio then)``; ``low``/``high`` its interval.
    ``process_sd`` and ``session_sd`` are the log-scale spreads the interval was built with.
    """

    ratio: float
    low: float
    high: float
    confidence: float
    sessions: int
    base_sessions: int
    base_processes: int
    process_sd: float
    session_sd: float
    rounds: int
    processes: int = 1


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2)


def _log_within_var(ci: RatioCI) -> float:
    """The variance of a session's log ratio that its own bootstrap interval implies."""
    return ((np.log(ci.high) - np.log(ci.low)) / (2 * _z(ci.confidence))) ** 2


def spread_of(groups: list[list[RatioCI]]) -> tuple[float, float]:
    """``(process sd, session sd)`` of log ratios, one group of sessions per fresh process.

    One-way analysis of variance: the session sd is the pooled sd inside processes (within-run
    noise included); the process sd is what the process means vary beyond that. A part that
    cannot be estimated (one process, or one session per process) is 0.
    """
    logs = [np.log([c.ratio for c in g]) for g in groups if g]
    inside = [x - x.mean() for x in logs if x.size > 1]
    dof = sum(x.size - 1 for x in inside)
    session_var = float(sum((x ** 2).sum() for x in inside) / dof) if dof else 0.0
    if len(logs) < 2:
        return 0.0, float(np.sqrt(session_var))
    means = np.array([x.mean() for x in logs])
    per_process = float(np.mean([1.0 / x.size for x in logs]))
    process_var = max(0.0, float(means.var(ddof=1)) - session_var * per_process)
    return float(np.sqrt(process_var)), float(np.sqrt(session_var))


def _session_var(cis: list[RatioCI], measured: float | None, floor: float) -> float:
    """A session's log-ratio variance: the spread measured between sessions, or at least the
    floor plus what the sessions' own intervals say."""
    within = float(np.mean([_log_within_var(c) for c in cis]))
    return max(measured ** 2 if measured is not None else 0.0, floor ** 2 + within)


def _robust_sd(x: np.ndarray) -> float | None:
    """1.4826 x the median absolute deviation: the sd of normal data, blind to one wild value."""
    if x.size < 3:
        return float(x.std(ddof=1)) if x.size == 2 else None
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def shift_ci(now: list[list[RatioCI]], base: list[list[RatioCI]], confidence: float = 0.95,
             process_floor: float = PROCESS_SPREAD,
             session_floor: float = SESSION_SPREAD) -> ShiftCI:
    """The model's move against its baseline, with an interval that covers fresh processes.

    ``now`` holds this check's sessions and ``base`` the baseline's, each grouped by the process
    that measured them (a check in its own process is one group). The move is the difference of
    the median log ratios: one session stuck in a slow mode (seen on a loaded VM: one pair in
    four reading 20% off) moves a mean, not a median. Its variance is taken as
    ``process^2 (1/Q + 1/P) + pi/2 (session_now^2 / k + session_base^2 / N)`` for Q and P
    processes, k and N sessions (pi/2: a median's variance over a mean's). The process sd is the
    largest of the baseline's measured one, this check's (when it ran in several processes) and
    ``process_floor``. A session sd is the one measured between sessions (for a one-process
    check, robustly: from the median absolute deviation), or ``session_floor`` plus the sessions'
    own bootstrap variance if that is larger.
    """
    flat_now = [c for g in now for c in g]
    flat = [c for g in base for c in g]
    if not flat_now or not flat:
        raise ValueError(f"need sessions now and in the baseline (got {len(flat_now)} and "
                         f"{len(flat)})")
    q, processes = sum(1 for g in now if g), sum(1 for g in base if g)
    base_process, base_session = spread_of(base)
    now_process, now_session = spread_of(now)
    r = np.log([c.ratio for c in flat_now])
    b = np.log([c.ratio for c in flat])
    if q == 1:
        now_session = _robust_sd(r) or 0.0
    var_now = _session_var(flat_now, now_session if r.size > q else None, session_floor)
    var_base = _session_var(flat, base_session if b.size > processes else None, session_floor)
    process_sd = max(base_process, now_process, process_floor)
    var = (process_sd ** 2 * (1 / q + 1 / processes)
           + np.pi / 2 * (var_now / r.size + var_base / b.size))
    d, half = float(np.median(r) - np.median(b)), _z(confidence) * float(np.sqrt(var))
    return ShiftCI(float(np.exp(d)), float(np.exp(d - half)), float(np.exp(d + half)), confidence,
                   int(r.size), int(b.size), processes, process_sd,
                   float(np.sqrt(var_now)), min(c.rounds for c in flat_now), q)
