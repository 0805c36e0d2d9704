"""Statistics and verdict rules of the latency comparison, on synthetic timings (deterministic)."""

from __future__ import annotations

import numpy as np
import pytest

from compress.bench.compare import CompareSettings, calls_per_block, is_failure, sequential_rounds
from compress.bench.stats import (
    INCONCLUSIVE,
    NOT_SLOWER,
    SLOWER,
    RatioCI,
    decide,
    median_ratio_ci,
    summarize,
)


def test_summarize_known_values():
    st = summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (st.p50, st.min, st.n) == (3.0, 1.0, 5)
    assert st.p90 == pytest.approx(7.6)  # linear interpolation between 4 and 10
    assert st.mean == pytest.approx(4.0)
    assert st.std == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert st.throughput == pytest.approx(250.0)


def test_ratio_ci_brackets_true_ratio_and_is_deterministic():
    rng = np.random.default_rng(1)
    b = 1.0 + 0.02 * rng.standard_normal(200)
    a = 1.2 * (1.0 + 0.02 * rng.standard_normal(200))
    ci = median_ratio_ci(a, b)
    assert ci.low < 1.2 < ci.high
    assert ci.ratio == pytest.approx(1.2, abs=0.01)
    assert ci.high - ci.low < 0.02  # 200 rounds at 2% noise: a narrow interval
    assert median_ratio_ci(a, b) == ci  # fixed seed: same timings, same interval
    assert median_ratio_ci(a, b, seed=7) != ci


def test_ratio_ci_normalized_by_base_run():
    rng = np.random.default_rng(2)
    ref_now, ref_then = 0.5 + 0.005 * rng.standard_normal((2, 100))
    # the machine got 2x slower for both workloads: the normalized ratio stays 1
    now = median_ratio_ci(2 * 3.0 * ref_now / 0.5, 2 * ref_now, 3.0 * ref_then / 0.5, ref_then)
    assert now.ratio == pytest.approx(1.0, abs=1e-9)
    assert now.low < 1.0 < now.high
    # the model alone got 30% slower
    slow = median_ratio_ci(1.3 * 3.0 * ref_now / 0.5, ref_now, 3.0 * ref_then / 0.5, ref_then)
    assert slow.ratio == pytest.approx(1.3, abs=1e-9)
    assert slow.low > 1.25


def test_ratio_ci_rejects_unpaired_rounds():
    with pytest.raises(ValueError, match="need paired, non-empty rounds"):
        median_ratio_ci([1.0, 2.0], [1.0])


@pytest.mark.parametrize(("low", "high", "expected"), [
    (1.11, 1.30, SLOWER),
    (0.95, 1.09, NOT_SLOWER),
    (1.05, 1.15, None),
    (1.10, 1.20, None),  # on the line: not decided
    (1.00, 1.10, None),
])
def test_decide_rules(low, high, expected):
    assert decide(RatioCI(1.1, low, high, 0.95, 50), tolerance=0.10) == expected


def test_is_failure_strict():
    assert is_failure(SLOWER) and not is_failure(NOT_SLOWER)
    assert not is_failure(INCONCLUSIVE) and is_failure(INCONCLUSIVE, strict=True)


def test_calls_per_block_clamps():
    s = CompareSettings(block_ms=2.0, min_calls=1, max_calls=1000)
    assert calls_per_block(1.0, s) == 2
    assert calls_per_block(10.0, s) == 1
    assert calls_per_block(0.0001, s) == 1000


class FakeModel:
    """Synthetic per-call timings: base ms times a drift factor of the call count, plus noise."""

    def __init__(self, ms: float, seed: int, noise: float = 0.02, drift=None, spikes: float = 0.0):
        self.ms, self.rng, self.noise = ms, np.random.default_rng(seed), noise
        self.drift, self.spikes, self.calls = drift or (lambda t: 1.0), spikes, 0
        self.clock = None

    def __call__(self, n: int) -> np.ndarray:
        t = self.clock.t if self.clock else self.calls
        x = self.ms * self.drift(t) * (1 + self.noise * np.abs(self.rng.standard_normal(n)))
        if self.spikes and self.rng.random() < self.spikes:
            x = x * 10  # a block the OS preempted
        self.calls += n
        if self.clock:
            self.clock.t += float(x.sum()) / 1000
        return x


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run(a: FakeModel, b: FakeModel, tolerance: float = 0.10, **kw):
    clock = FakeClock()
    a.clock = b.clock = clock
    s = CompareSettings(tolerance=tolerance, **{"max_seconds": 30.0, **kw})
    return sequential_rounds(a, b, 5, s, clock=clock)


def test_clear_slowdown_is_slower_at_first_look():
    c = run(FakeModel(1.3, 1), FakeModel(1.0, 2))
    assert c.verdict == SLOWER
    assert c.ci.low > 1.1 and c.ci.ratio == pytest.approx(1.3, abs=0.02)
    assert c.seconds < 1.5  # decided at the first look, after min_seconds of data
    assert c.rounds >= 20


def test_identical_is_not_slower():
    c = run(FakeModel(1.0, 3), FakeModel(1.0, 4))
    assert c.verdict == NOT_SLOWER and c.ci.high < 1.1


def test_on_the_line_is_inconclusive_at_the_cap():
    # exactly 10% slower with 10% tolerance: the interval never leaves the line
    c = run(FakeModel(1.1, 5, noise=0.0), FakeModel(1.0, 6, noise=0.0), max_seconds=3.0)
    assert c.verdict == INCONCLUSIVE
    assert c.seconds >= 3.0 and c.ci.low <= 1.1 <= c.ci.high


def test_cap_before_enough_rounds_is_inconclusive():
    c = run(FakeModel(3.0, 7), FakeModel(1.0, 8), max_seconds=0.05)
    assert c.verdict == INCONCLUSIVE and c.rounds < 20


def test_interleaving_cancels_drift():
    # the machine slows down 3x over the run; A is 20% slower throughout
    drift = lambda t: 1.0 + 2.0 * min(t / 5.0, 1.0)  # noqa: E731
    c = run(FakeModel(1.2, 9, drift=drift), FakeModel(1.0, 10, drift=drift), tolerance=0.05)
    assert c.verdict == SLOWER
    assert c.ci.ratio == pytest.approx(1.2, abs=0.03)


def test_preempted_blocks_do_not_flip_identical():
    c = run(FakeModel(1.0, 11, spikes=0.1), FakeModel(1.0, 12), tolerance=0.05)
    assert c.verdict == NOT_SLOWER
    assert c.ci.ratio == pytest.approx(1.0, abs=0.03)
