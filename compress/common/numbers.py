"""How a quality number reads in text, one rule for every room: accuracy-like fractions as
percentages (``99.44%``), their differences in points (``+0.28 pp``), other metrics as decimals
(``0.9731``), a missing or non-finite value as a dash; and a tolerance or share as the shortest
exact percentage (``10%``, ``2.5%``)."""

from __future__ import annotations

import math
from typing import Any

PERCENT_HINTS = ("accuracy", "acc_", "recall", "precision", "top1", "top5", "agreement", "f1")


def num(v: Any) -> float | None:
    """A finite float, or None for missing, non-numeric, NaN and inf values."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def is_percent(metric: str) -> bool:
    """True for metrics shown as percentages (accuracy-like fractions)."""
    return any(h in metric.lower() for h in PERCENT_HINTS)


def fmt_quality(metric: str, v: Any) -> str:
    """A quality value: ``99.44%`` for accuracy-like metrics, ``0.9731`` otherwise."""
    x = num(v)
    if x is None:
        return "-"
    return f"{x * 100:.2f}%" if is_percent(metric) else f"{x:.4f}"


def fmt_delta(metric: str, d: Any) -> str:
    """A quality difference: ``+0.28 pp`` for accuracy-like metrics, ``-0.0012`` otherwise."""
    x = num(d)
    if x is None:
        return "-"
    return f"{x * 100:+.2f} pp" if is_percent(metric) else f"{x:+.4f}"


def percent(x: float) -> str:
    """A tolerance or share: 0.1 -> '10%', 0.025 -> '2.5%'."""
    return f"{x:.0%}" if round(x * 100, 6).is_integer() else f"{x:.1%}"
