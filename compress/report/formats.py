"""How the report writes numbers: finite values or a dash, percentages for accuracy-like
metrics, milliseconds with the digits that matter, sizes with k/M/G."""

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


def fmt_ms(v: Any) -> str:
    """Milliseconds with the digits that matter: ``0.0310``, ``0.830``, ``14.9``."""
    x = num(v)
    if x is None:
        return "-"
    return f"{x:.4f}" if x < 0.1 else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_num(v: Any, digits: int = 4) -> str:
    """A plain number, ``-`` when missing."""
    x = num(v)
    return "-" if x is None else f"{x:.{digits}g}"


def human(n: Any, unit: str = "") -> str:
    """``2723000`` -> ``2.72M`` (with ``unit`` appended)."""
    x = num(n)
    if x is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suffix}{unit}"
    return f"{x:g}{unit}"


def final_label(report: dict) -> str:
    """The final model's name, or what a run without one means (never ``None``)."""
    if report.get("final"):
        return str(report["final"])
    return "none (the run failed before a final model)" if report.get("status") == "failed" \
        else "none"
