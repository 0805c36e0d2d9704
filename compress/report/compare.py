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

from compress.common.files import load_json
from compress.errors import InputError
from compress.report.formats import fmt_quality, human, is_percent, num

FINGERPRINT_KEYS = ("cpu", "cores", "machine", "os", "flags")


def load_run(path: Path) -> dict:
    """The report of a run directory (or a report.json path); InputError when unusable."""
    path = Path(path)
    file = path if path.suffix == ".json" and path.is_file() else path / "report.json"
    if not path.exists():
        raise InputError(f"{path}: no such run directory")
    report = load_json(file, "a run directory holding report.json")
    models = report.get("models") if isinstance(report, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and "name" in m for m in models):
        raise InputError(f"{file}: expected a JSON object with a 'models' list of objects "
                         "that each have a 'name'")
    if report.get("status") == "failed" and not report.get("final"):
        failure = report.get("failure") or {}
        why = f" ({failure.get('reason')}: {failure.get('message')})" if failure.get("message") else ""
        raise InputError(f"{file}: the run failed{why} before it had a final model; "
                         "there is nothing to compare")
    return report


def _p50(m: dict | None) -> float | None:
    return num(((m or {}).get("latency_ms") or {}).get("p50"))


def _ratio(b: Any, a: Any) -> float | None:
    x, y = num(b), num(a)
    return x / y if x is not None and y is not None and y > 0 else None


def _side(m: dict | None) -> dict | None:
    if m is None:
        return None
    return {"quality": num(m.get("accuracy")), "metric": m.get("metric", "accuracy"),
            "split": m.get("split"), "p50_ms": _p50(m), "bytes": num(m.get("bytes")),
            "precision": m.get("precision"), "threads": m.get("threads"),
            "opt_level": m.get("opt_level")}


def model_row(name: str, a: dict | None, b: dict | None) -> dict:
    """One model of either run: both sides and the deltas (B - A, B / A) where both exist."""
    qa, qb = num((a or {}).get("accuracy")), num((b or {}).get("accuracy"))
    return {"name": name, "in": "both" if a and b else ("a" if a else "b"),
            "a": _side(a), "b": _side(b),
            "quality_delta": qb - qa if qa is not None and qb is not None else None,
            "p50_ratio": _ratio(_p50(b), _p50(a)),
            "size_ratio": _ratio((b or {}).get("bytes"), (a or {}).get("bytes"))}


def fingerprint_differences(a: dict, b: dict) -> list[str]:
    """What differs between the two runs' machines and runtime versions, as ``key: A -> B``."""
    ma, mb = a.get("machine") or {}, b.get("machine") or {}
    if not ma or not mb:
        missing = " and ".join(n for n, m in (("A", ma), ("B", mb)) if not m)
        return [f"run {missing} recorded no machine fingerprint"]
    diffs = [f"{k}: {_short(ma.get(k))} -> {_short(mb.get(k))}" for k in FINGERPRINT_KEYS
             if ma.get(k) != mb.get(k) and not (k == "flags" and set(ma.get(k) or [])
                                                 == set(mb.get(k) or []))]
    va, vb = a.get("versions") or {}, b.get("versions") or {}
    if va.get("onnxruntime") != vb.get("onnxruntime"):
        diffs.append(f"onnxruntime: {va.get('onnxruntime')} -> {vb.get('onnxruntime')}")
    return diffs


def _short(v: Any) -> str:
    if isinstance(v, list):
        return f"{len(v)} flags"
    return repr(v)


def compare_reports(a: dict, b: dict, tolerance: float = 0.10,
                    quality_tolerance: float = 0.005) -> dict:
    """Models side by side and the verdict on run B's final model against run A's.

    Args:
        tolerance: allowed slowdown of the final model's p50 (0.10 = 10%).
        quality_tolerance: allowed loss of the headline quality, in its own units
            (0.005 = 0.5 percentage points of accuracy).
    """
    ma = {m["name"]: m for m in a.get("models") or []}
    mb = {m["name"]: m for m in b.get("models") or []}
    names = list(ma) + [n for n in mb if n not in ma]
    rows = [model_row(n, ma.get(n), mb.get(n)) for n in names]
    fa, fb = ma.get(a.get("final")), mb.get(b.get("final"))
    final: dict[str, Any] = {"a": a.get("final"), "b": b.get("final"), "checked": False}
    if fa is not None and fb is not None:
        row = model_row("final", fa, fb)
        final.update({"checked": True, "metric": fb.get("metric", "accuracy"),
                      "quality_a": row["a"]["quality"], "quality_b": row["b"]["quality"],
                      "p50_a_ms": row["a"]["p50_ms"], "p50_b_ms": row["b"]["p50_ms"],
                      **{k: row[k] for k in ("quality_delta", "p50_ratio", "size_ratio")}})
        final.update(_verdict(final, fb, tolerance, quality_tolerance))
    settings = [k for k in ("threads", "opt_level") if fa and fb and fa.get(k) != fb.get(k)]
    return {"tolerance": tolerance, "quality_tolerance": quality_tolerance,
            "runs": {k: {"pipeline": r.get("pipeline"), "final": r.get("final"),
                         "status": r.get("status")} for k, r in (("a", a), ("b", b))},
            "models": rows, "final": final,
            "machine_differences": fingerprint_differences(a, b),
            "settings_differ": settings}


def _verdict(row: dict, fb: dict, tolerance: float, quality_tolerance: float) -> dict:
    higher = bool(fb.get("higher_is_better", True))
    d, r = row["quality_delta"], row["p50_ratio"]
    lost = d is not None and ((d < -quality_tolerance) if higher else (d > quality_tolerance))
    slower = r is not None and r > 1 + tolerance
    reasons = []
    if slower:
        reasons.append(f"p50 {r:.2f}x run A's (tolerance {tolerance:.0%})")
    if lost:
        metric = fb.get("metric", "accuracy")
        reasons.append(f"{metric} {_delta_text(metric, d)} (tolerance "
                       f"{_delta_text(metric, quality_tolerance).lstrip('+')})")
    return {"slower": slower, "quality_lost": lost, "regressed": slower or lost,
            "reasons": reasons, "higher_is_better": higher}


def _delta_text(metric: str, d: float | None) -> str:
    if d is None:
        return "-"
    return f"{d * 100:+.2f} pp" if is_percent(metric) else f"{d:+.4f}"


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
        a, b = row["a"] or {}, row["b"] or {}
        metric = (b or a).get("metric", "accuracy")
        table.append((row["name"], fmt_quality(metric, a.get("quality")),
                      fmt_quality(metric, b.get("quality")),
                      _delta_text(metric, row["quality_delta"]),
                      _ms(a.get("p50_ms")), _ms(b.get("p50_ms")), _ratio_text(row["p50_ratio"]),
                      human(a.get("bytes"), "B"), human(b.get("bytes"), "B"),
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
