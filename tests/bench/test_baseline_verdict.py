"""The baseline check's verdict on synthetic timings: what the interval covers, and its message.

No clocks here: block medians are drawn from seeded generators, grouped the way a real baseline
groups them (session pairs per fresh process), and the file is built by the code that writes it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _util import ROOT

from compress.bench.baseline import BaselineFile, _baseline_json, check_message, judge
from compress.bench.reference import conv_mlp_model
from compress.bench.sessions import PairRounds
from compress.bench.stats import (
    NOT_SLOWER,
    PROCESS_SPREAD,
    SLOWER,
    RatioCI,
    fastest_ratio_ci,
    median_ratio_ci,
    shift_ci,
    spread_of,
)

REF_MS = 0.2


def pairs(rng, ratio: float, n: int = 4, rounds: int = 40, noise: float = 0.01,
          pair_sd: float = 0.01) -> list[PairRounds]:
    """``n`` session pairs whose model/reference ratio is ``ratio`` times a small per-pair offset."""
    out = []
    for _ in range(n):
        r = ratio * float(np.exp(pair_sd * rng.standard_normal()))
        ref = REF_MS * (1 + noise * np.abs(rng.standard_normal(rounds)))
        model = r * REF_MS * (1 + noise * np.abs(rng.standard_normal(rounds)))
        out.append(PairRounds(model.tolist(), ref.tolist(), 10, 10))
    return out


def baseline(tmp_path, process_ratios: list[float], seed: int = 0) -> BaselineFile:
    """A version-2 baseline of a tiny model, one group of pairs per fresh process."""
    rng = np.random.default_rng(seed)
    model = tmp_path / "m.onnx"
    onnx.save(conv_mlp_model(channels=4, size=8, convs=1), model)
    feeds = {"x": np.zeros((1, 4, 8, 8), np.float32)}
    measured = [pairs(rng, r) for r in process_ratios]
    ref = {"kind": "builtin", "version": 1, "sha256": "0" * 64}
    data = _baseline_json(model, feeds, 1, "all", "cpu", ref, measured, 12.0)
    return BaselineFile.model_validate(json.loads(json.dumps(data)))


def test_fastest_blocks_leave_out_the_load_of_a_busy_machine():
    rng = np.random.default_rng(0)
    # each block ran at a load between 1x and 2x, drawn apart for the two models
    ref = 0.2 * (1 + rng.random(200)) * (1 + 0.01 * rng.standard_normal(200))
    model = 1.2 * 0.2 * (1 + rng.random(200)) * (1 + 0.01 * rng.standard_normal(200))
    fastest, medians = fastest_ratio_ci(model, ref), median_ratio_ci(model, ref)
    assert fastest.ratio == pytest.approx(1.2, abs=0.03) and fastest.low <= fastest.ratio
    assert fastest.ratio <= fastest.high and fastest.rounds == 200
    # the ratio of medians carries each model's share of the load: over 3x the interval
    assert np.log(medians.high / medians.low) > 3 * np.log(fastest.high / fastest.low)
    with pytest.raises(ValueError, match="need paired, non-empty rounds"):
        fastest_ratio_ci([1.0, 2.0], [1.0])


def test_spread_of_separates_processes_from_sessions():
    def ci(r):
        return RatioCI(r, r * 0.99, r * 1.01, 0.95, 40)

    # sessions inside a process differ by +-2% (log), process means by 10% and 0%
    groups = [[ci(np.exp(m + s)) for s in (-0.02, 0.0, 0.02)] for m in (0.0, 0.1, 0.0)]
    process, session = spread_of(groups)
    assert session == pytest.approx(0.02, rel=1e-9)
    # var of the means (1/300) minus the session part (0.0004 / 3)
    assert process == pytest.approx(np.sqrt(0.1 ** 2 / 3 - 0.02 ** 2 / 3), rel=1e-9)
    assert spread_of([[ci(1.0), ci(1.1)]]) == (0.0, pytest.approx(np.log(1.1) / np.sqrt(2)))


def test_a_process_shift_inside_the_measured_spread_passes(tmp_path):
    # the baseline's three fresh processes read 1.00, 1.06 and 0.95: a spread of ~5%
    base = baseline(tmp_path, [1.0, 1.06, 0.95])
    assert base.model_extra is None or "spread" in json.loads(base.model_dump_json())
    now = [pairs(np.random.default_rng(1), 1.07)]  # this process: 7% above their mean
    verdict, ci = judge(now, base, tolerance=0.05)
    assert verdict is None  # inconclusive: the check passes, with a warning
    assert ci.low < 1.05 < ci.high and ci.ratio == pytest.approx(1.067, abs=0.01)
    assert ci.process_sd == pytest.approx(0.050, abs=0.01)
    # the within-run interval alone (today's rule) would have called it slower
    a = np.concatenate([p.model_ms for p in now[0]])
    b = np.concatenate([p.reference_ms for p in now[0]])
    old = median_ratio_ci(a, b, [x for g in base.sessions for x in g.model_ms],
                          [x for g in base.sessions for x in g.reference_ms])
    assert old.low > 1.05


def test_a_15_percent_shift_fails_with_its_message(tmp_path):
    base = baseline(tmp_path, [1.0, 1.01, 0.99])  # a steady machine: the floor decides
    now = [pairs(np.random.default_rng(2), 1.15)]
    verdict, ci = judge(now, base, tolerance=0.05)
    assert verdict == SLOWER and ci.low > 1.05
    assert ci.process_sd == PROCESS_SPREAD
    assert check_message(SLOWER, ci, "m.onnx", "b.json", base, 0.05, 12.3, False) == (
        "slower: m.onnx is 1.153x its baseline b.json relative to the reference workload "
        "(95% CI 1.093-1.216 over 4 session pairs in 1 process(es) now and 12 in 3 then; "
        "spread 2.0% between processes, 2.0% per session; tolerance 5%; 40 rounds in 12.3 s)")
    # the same model, unchanged: not slower
    verdict, ci = judge([pairs(np.random.default_rng(3), 1.0)], base, tolerance=0.10)
    assert verdict == NOT_SLOWER and ci.high < 1.10


def test_one_wild_session_pair_moves_neither_verdict(tmp_path):
    base = baseline(tmp_path, [1.0, 1.01, 0.99])
    rng = np.random.default_rng(6)
    # three pairs unchanged, one stuck in a slow mode 30% off: not a regression
    wild = pairs(rng, 1.0, n=3) + pairs(rng, 1.3, n=1)
    verdict, ci = judge([wild], base, tolerance=0.05)
    assert verdict != SLOWER and ci.ratio == pytest.approx(1.0, abs=0.02)
    # three pairs 15% slower, one whose reference ran slow: still caught
    wild = pairs(rng, 1.15, n=3) + pairs(rng, 0.9, n=1)
    verdict, ci = judge([wild], base, tolerance=0.05)
    assert verdict == SLOWER and ci.ratio == pytest.approx(1.15, abs=0.03)


def test_more_processes_now_narrow_the_interval(tmp_path):
    base = baseline(tmp_path, [1.0, 1.01, 0.99])
    rng = np.random.default_rng(4)
    one = shift_ci([[p.ci() for p in pairs(rng, 1.0)]], base.groups())
    three = shift_ci([[p.ci() for p in pairs(rng, 1.0)] for _ in range(3)], base.groups())
    assert (one.processes, three.processes) == (1, 3)
    # process part: 0.02^2 (1 + 1/3) against 0.02^2 (1/3 + 1/3)
    assert np.log(three.high / three.low) < 0.8 * np.log(one.high / one.low)


def test_a_version_1_baseline_is_read_as_one_session():
    # the demo's baseline as version 1 wrote it (before the demo's model changed)
    old = BaselineFile.model_validate(
        json.loads((ROOT / "tests" / "bench" / "data" / "baseline-version-1.json").read_text()))
    assert old.version == 1 and old.sessions is None and old.reference_file() is None
    (group,) = old.groups()
    fastest = min(old.rounds.model_ms) / min(old.rounds.reference_ms)
    assert len(group) == 1 and group[0].ratio == pytest.approx(fastest, rel=1e-9)
    assert old.calls() == (old.rounds.calls_per_block,) * 2 and old.pairs() == 4
    ratio = group[0].ratio
    now = [pairs(np.random.default_rng(5), ratio)]
    verdict, ci = judge(now, old, tolerance=0.25)
    assert verdict == NOT_SLOWER and ci.base_sessions == 1 and ci.base_processes == 1
    assert check_message(NOT_SLOWER, ci, "m.onnx", "old.json", old, 0.25, 3.0, True).endswith(
        "tolerance 25%; 40 rounds in 3.0 s; model file changed; a version-1 baseline holds one "
        "session and no measured spread: rewrite it (pytest --latency-update, or "
        "--save-baseline) for a tighter check)")


def test_version_2_needs_sessions(tmp_path):
    data = json.loads(baseline(tmp_path, [1.0, 1.0]).model_dump_json())
    data["sessions"] = None
    with pytest.raises(ValueError, match="version 2 needs sessions"):
        BaselineFile.model_validate(data)


def test_a_fresh_process_reports_a_bad_model_in_one_line(tmp_path):
    from compress.bench.sessions import PairRequest, in_fresh_process
    from compress.errors import InputError

    missing = tmp_path / "none.onnx"
    req = PairRequest(str(missing), None, {"x": {"dtype": "float32", "shape": [1, 4]}}, 1, "all",
                      "cpu", 2, 0.5)
    with pytest.raises(InputError) as e:
        in_fresh_process(req, timeout=300)
    assert str(e.value) == f"{missing}: no such file"
