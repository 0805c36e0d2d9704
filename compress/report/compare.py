"""Compare two runs' reports: models matched by name, deltas of quality, latency and size, and
whether the final model regressed. Run A is the reference (older), run B the candidate (newer):
deltas are B - A and ratios B / A.

Latencies from two runs were measured at different times, maybe on different machines: their
ratio is only a rough guide (FACTS: 1-8% run-to-run noise at 1 thread, far more at 2). The
fingerprints are compared and a difference is said out loud.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.errors import InputError
from compress.records import ModelMeasurement, RunReport
from compress.report.formats import fmt_delta, fmt_quality, human, num

FINGERPRINT_KEYS = ("cpu", "cores", "machine", "os", "flags")


def load_run(path: Path) -> RunReport:
    """The report of a run directory (or a report.json path); InputError when unusable."""
    path = Path(path)
    file = path if path.suffix == ".json" and path.is_file() else path / "report.json"
    if not path.exists():
        raise InputError(f"{path}: no such run directory")
    report = RunReport.load(file)
    if report.status == "failed" and not report.final:
        failure = report.failure
        why = f" ({failure.reason}: {failure.message})" if failure and failure.message else ""
        raise InputError(f"{file}: the run failed{why} before it had a final model; "
                         "there is nothing to compare")
    return report


def _ratio(b: Any, a: Any) -> float | None:
    x, y = num(b), num(a)
    return x / y if x is not None and y is not None and y > 0 else None


_NONE = {"quality": None, "p50_ms": None, "bytes": None}  # the side of a model a run lacks


def _side(m: ModelMeasurement | None) -> dict | None:
    if m is None:
        return None
    return {"quality": num(m.accuracy), "metric": m.metric, "split": m.split, "p50_ms": num(m.p50),
            "bytes": num(m.bytes), "precision": m.precision, "threads": m.threads,
            "opt_level": m.opt_level}


def model_row(name: str, a: ModelMeasurement | None, b: ModelMeasurement | None) -> dict:
    """One model of either run: both sides and the deltas (B - A, B / A) where both exist."""
    qa, qb = (num(m.accuracy) if m else None for m in (a, b))
    return {"name": name, "in": "both" if a and b else ("a" if a else "b"),
            "a": _side(a), "b": _side(b),
            "quality_delta": qb - qa if qa is not None and qb is not None else None,
            "p50_ratio": _ratio(b and b.p50, a and a.p50),
            "size_ratio": _ratio(b and b.bytes, a and a.bytes)}


def fingerprint_differences(a: RunReport, b: RunReport) -> list[str]:
    """What differs between the two runs' machines and runtime versions, as ``key: A -> B``."""
    ma, mb = a.machine, b.machine
    if not ma.recorded or not mb.recorded:
        missing = " and ".join(n for n, m in (("A", ma), ("B", mb)) if not m.recorded)
        return [f"run {missing} recorded no machine fingerprint"]
    diffs = [f"{k}: {_short(getattr(ma, k))} -> {_short(getattr(mb, k))}" for k in FINGERPRINT_KEYS
             if getattr(ma, k) != getattr(mb, k)
             and not (k == "flags" and set(ma.flags) == set(mb.flags))]
    ort_a, ort_b = (r.versions.get("onnxruntime") for r in (a, b))
    if ort_a != ort_b:
        diffs.append(f"onnxruntime: {ort_a} -> {ort_b}")
    return diffs


def _short(v: Any) -> str:
    if isinstance(v, list):
        return f"{len(v)} flags"
    return repr(v)


def compare_reports(a: RunReport, b: RunReport, tolerance: float = 0.10,
                    quality_tolerance: float = 0.005) -> dict:
    """Models side by side and the verdict on run B's final model against run A's.

    Args:
        tolerance: allowed slowdown of the final model's p50 (0.10 = 10%).
        quality_tolerance: allowed loss of the headline quality, in its own units
            (0.005 = 0.5 percentage points of accuracy).
    """
    ma, mb = {m.name: m for m in a.models}, {m.name: m for m in b.models}
    names = list(ma) + [n for n in mb if n not in ma]
    rows = [model_row(n, ma.get(n), mb.get(n)) for n in names]
    fa, fb = a.model(a.final), b.model(b.final)
    final: dict[str, Any] = {"a": a.final, "b": b.final, "checked": False}
    if fa is not None and fb is not None:
        row = model_row("final", fa, fb)
        final.update({"checked": True, "metric": fb.metric,
                      "quality_a": row["a"]["quality"], "quality_b": row["b"]["quality"],
                      "p50_a_ms": row["a"]["p50_ms"], "p50_b_ms": row["b"]["p50_ms"],
                      **{k: row[k] for k in ("quality_delta", "p50_ratio", "size_ratio")}})
        final.update(_verdict(final, fb, tolerance, quality_tolerance))
    settings = [k for k in ("threads", "opt_level")
                if fa and fb and getattr(fa, k) != getattr(fb, k)]
    return {"tolerance": tolerance, "quality_tolerance": quality_tolerance,
            "runs": {k: {"pipeline": r.pipeline, "final": r.final, "status": r.status}
                     for k, r in (("a", a), ("b", b))},
            "models": rows, "final": final,
            "machine_differences": fingerprint_differences(a, b),
            "settings_differ": settings}


def _verdict(row: dict, fb: ModelMeasurement, tolerance: float, quality_tolerance: float) -> dict:
    higher = fb.higher_is_better
    d, r = row["quality_delta"], row["p50_ratio"]
    lost = d is not None and ((d < -quality_tolerance) if higher else (d > quality_tolerance))
    slower = r is not None and r > 1 + tolerance
    reasons = []
    if slower:
        reasons.append(f"p50 {r:.2f}x run A's (tolerance {tolerance:.0%})")
    if lost:
        reasons.append(f"{fb.metric} {_delta_text(fb.metric, d)} (tolerance "
                       f"{_delta_text(fb.metric, quality_tolerance).lstrip('+')})")
    return {"slower": slower, "quality_lost": lost, "regressed": slower or lost,
            "reasons": reasons, "higher_is_better": higher}


def _delta_text(metric: str, d: float | None) -> str:
    return fmt_delta(metric, d)


def _ratio_text(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def format_comparison(result: dict, dir_a: Path, dir_b: Path) -> str:
    """The comparison as a text table plus the final model's verdict and any caveats."""
    ra, rb = result["runs"]["a"], result["runs"]["b"]
    lines = [f"A  {dir_a}  ({ra['pipeline']}, final {ra['final']}, {ra['status'] or 'done'})",
             f"B  {dir_b}  ({rb['pipeline']}, final {rb['final']}, {rb['status'] or 'done'})", ""]
    head = ("model", "quality A", "quality B", "delta", "p50 A ms", "p50 B ms", "ratio",
            "size A", "size B", "ratio")
    table = [head]
    for row in result["models"]:
        metric = (row["b"] or row["a"])["metric"]
        a, b = row["a"] or _NONE, row["b"] or _NONE
        table.append((row["name"], fmt_quality(metric, a["quality"]),
                      fmt_quality(metric, b["quality"]),
                      _delta_text(metric, row["quality_delta"]),
                      _ms(a["p50_ms"]), _ms(b["p50_ms"]), _ratio_text(row["p50_ratio"]),
                      human(a["bytes"], "B"), human(b["bytes"], "B"),
                      _ratio_text(row["size_ratio"])))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head))]
    for r in table:
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    lines += ["", _final_line(result)]
    if result["machine_differences"]:
        lines.append("note: the runs' machines differ (" + "; ".join(result["machine_differences"])
                     + "): latencies from different machines or days are only roughly comparable")
    if result["settings_differ"]:
        lines.append("note: the final models were measured with different "
                     + " and ".join(result["settings_differ"]) + ": the latency ratio mixes "
                     "model and settings")
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _final_line(result: dict) -> str:
    f = result["final"]
    if not f["checked"]:
        return (f"final: not compared (run A final {f['a']!r}, run B final {f['b']!r}: "
                "a final model is missing from a report)")
    verdict = "REGRESSED: " + "; ".join(f["reasons"]) if f["regressed"] else "no regression"
    name = f["b"] if f["a"] == f["b"] else f"{f['a']} -> {f['b']}"
    return (f"final {name}: {f['metric']} {_delta_text(f['metric'], f['quality_delta'])}, "
            f"p50 {_ratio_text(f['p50_ratio'])}, size {_ratio_text(f['size_ratio'])}: {verdict}")
