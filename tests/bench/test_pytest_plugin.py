"""The pytest plugin, loaded through its pytest11 entry point, driven by pytester."""

from __future__ import annotations

import json

import onnx
import pytest

from compress.bench.reference import conv_mlp_model

pytest_plugins = ["pytester"]


@pytest.fixture
def suite(pytester):
    """A user's project: a tiny and a big model and a test file using the fixture."""
    onnx.save(conv_mlp_model(channels=4, size=8, convs=2), pytester.path / "tiny.onnx")
    onnx.save(conv_mlp_model(channels=32, size=32, convs=4), pytester.path / "big.onnx")
    return pytester


def test_entry_point_registers_the_plugin():
    from importlib.metadata import entry_points

    eps = {e.name: e.value for e in entry_points(group="pytest11")}
    assert eps.get("compress_latency") == "compress.bench.pytest_plugin"


def test_than_fails_with_ratio_interval_and_fingerprint(suite):
    suite.makepyfile(test_models="""
        def test_big_vs_tiny(assert_not_slower):
            assert_not_slower("big.onnx", than="tiny.onnx", tolerance=0.10, max_seconds=5)

        def test_tiny_vs_big(assert_not_slower):
            v = assert_not_slower("tiny.onnx", than="big.onnx", tolerance=0.10, max_seconds=5)
            assert v.verdict == "not slower" and v.ci_high < 1.1
    """)
    r = suite.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.re_match_lines([
        r"latency regression: slower: big.onnx takes \d+\.\d{3}x the time of tiny.onnx "
        r"\(95% CI \d+\.\d{3}-\d+\.\d{3}, tolerance 10%; \d+ rounds x \d+ calls in \d+\.\d s\); "
        r"machine: .*, \d+ cores.*, ORT \d+\.\d+\.\d+, 1 thread\(s\), opt all, cpu clock",
    ])


def test_baseline_missing_then_update_then_check(suite):
    suite.makepyfile(test_base="""
        def test_tiny_baseline(assert_not_slower):
            assert_not_slower("tiny.onnx", baseline="latency/tiny.json", tolerance=0.5,
                              max_seconds=2)
    """)
    r = suite.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["latency/tiny.json: latency baseline not found; run pytest "
                            "with --latency-update to create it"])

    r = suite.runpytest("-p", "no:cacheprovider", "--latency-update")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["compress latency: rewrote 1 baseline(s): latency/tiny.json"])
    saved = json.loads((suite.path / "latency" / "tiny.json").read_text())
    assert saved["model"]["path"] == "tiny.onnx" and saved["version"] == 2
    # 4 session pairs in each of 3 fresh processes, at least 20 rounds each
    assert [s["process"] for s in saved["sessions"]] == [0] * 4 + [1] * 4 + [2] * 4
    assert min(len(s["model_ms"]) for s in saved["sessions"]) >= 20

    r = suite.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)

    # the baseline now claims the model used to be 3x faster: the check must fail
    for session in saved["sessions"]:
        session["model_ms"] = [x / 3 for x in session["model_ms"]]
    (suite.path / "latency" / "tiny.json").write_text(json.dumps(saved))
    r = suite.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    r.stdout.re_match_lines([r"latency regression: slower: tiny.onnx is \d+\.\d{3}x its "
                             r"baseline latency/tiny.json relative to the reference workload "
                             r"\(95% CI .* over 4 session pairs in 1 process\(es\) now and 12 in 3 "
                             r"then; .*; machine: .*"])


def test_inconclusive_warns_unless_strict(suite):
    suite.makepyfile(test_same="""
        def test_same(assert_not_slower):
            # a verdict needs at least 1 s of rounds: a 0.1 s cap is inconclusive anywhere
            v = assert_not_slower("big.onnx", than="big.onnx", max_seconds=0.1)
            assert v.verdict == "inconclusive"
    """)
    r = suite.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, warnings=1)
    r.stdout.fnmatch_lines(["*LatencyInconclusiveWarning: inconclusive: big.onnx takes*"])
    r = suite.runpytest("-p", "no:cacheprovider", "--latency-strict")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["latency regression: inconclusive: big.onnx takes*"])


def test_bad_call_is_a_type_error(suite):
    suite.makepyfile(test_bad="""
        import pytest

        def test_both(assert_not_slower):
            with pytest.raises(TypeError, match="exactly one of baseline= or than="):
                assert_not_slower("tiny.onnx", baseline="b.json", than="big.onnx")
            with pytest.raises(TypeError, match="reference= goes with baseline="):
                assert_not_slower("tiny.onnx", than="big.onnx", reference="big.onnx")
    """)
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
