"""How the report writes numbers: finite values or a dash, percentages for accuracy-like
metrics, milliseconds with the digits that matter, sizes with k/M/G."""

from __future__ import annotations

from typing import Any

# the quality rule is the package's one (compress.common.numbers); the report writes it as is
from compress.common.numbers import fmt_delta, fmt_quality, is_percent, num  # noqa: F401


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
