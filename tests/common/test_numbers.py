"""One rule for how a quality number reads, in every room."""

from __future__ import annotations

import math

import pytest

from compress.common.numbers import fmt_delta, fmt_quality, is_percent, percent


@pytest.mark.parametrize("metric, value, text", [
    ("accuracy", 0.99444, "99.44%"), ("recall_at_10", 0.9, "90.00%"), ("top1_agreement", 1, "100.00%"),
    ("cosine_mean", 0.97312, "0.9731"), ("spearman", -0.5, "-0.5000"),
    ("accuracy", None, "-"), ("accuracy", math.nan, "-"), ("accuracy", True, "-"),
])
def test_a_quality_value(metric, value, text):
    assert fmt_quality(metric, value) == text


@pytest.mark.parametrize("metric, d, text", [
    ("accuracy", -0.0028, "-0.28 pp"), ("accuracy", 0.01, "+1.00 pp"),
    ("cosine_mean", 0.0012, "+0.0012"), ("cosine_mean", None, "-"),
])
def test_a_quality_difference(metric, d, text):
    assert fmt_delta(metric, d) == text


def test_which_metrics_are_percentages():
    assert [m for m in ("accuracy", "cosine_mean", "spearman", "recall_at_10", "nll", "f1")
            if is_percent(m)] == ["accuracy", "recall_at_10", "f1"]


def test_a_tolerance():
    assert [percent(x) for x in (0.1, 0.025, 1.0, 0.333)] == ["10%", "2.5%", "100%", "33.3%"]
