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
