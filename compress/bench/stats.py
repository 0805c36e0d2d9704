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


def decide(ci: RatioCI, tolerance: float) -> str | None:
    """``slower`` if the whole interval lies above ``1 + tolerance``, ``not slower`` if it lies
    below; None while it straddles the line (measure more, or call it inconclusive at the cap)."""
    line = 1.0 + tolerance
    if ci.low > line:
        return SLOWER
    if ci.high < line:
        return NOT_SLOWER
    return None
