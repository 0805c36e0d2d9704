"""Compare two runs' reports: models matched by name, deltas of quality, latency and size, and
whether the final model regressed. Run A is the reference (older), run B the candidate (newer):
deltas are B - A and ratios B / A.

Latencies from two runs were measured at different times, maybe on different machines: a machine
that got 30% slower moves every model 30%. So speed is judged on the ratio each run measured
itself, in one interleaved benchmark: the final model's p50 over the teacher's, then run B's ratio
over run A's. That holds only when both runs hold the same teacher file (sha256); when they do
not, the absolute p50 ratio is used and a warning says so. The settings that differ
(``config.resolved.yaml``) and the machine fingerprints are listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.errors import InputError
from compress.records import ModelMeasurement, RunReport
from compress.report.config_diff import RESOLVED, KeyDiff
from compress.report.formats import fmt_delta, fmt_quality, human, num

FINGERPRINT_KEYS = ("cpu", "cores", "machine", "os", "flags")


def run_dir_of(path: Path) -> Path:
    """The run directory of a ``compare`` argument (a run directory or its report.json)."""
    path = Path(path)
    return path.parent if path.suffix == ".json" and path.is_file() else path


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


def model_row(name: str, a: ModelMeasurement | None, b: ModelMeasurement | None,
              teachers: tuple[ModelMeasurement, ModelMeasurement] | None = None) -> dict:
    """One model of either run: both sides and the deltas (B - A, B / A) where both exist;
    ``teachers`` (A's, B's: the same file) adds the ratio of the model's p50 to its run's
    teacher, B's over A's."""
    qa, qb = (num(m.accuracy) if m else None for m in (a, b))
    rel = None
    if teachers and a and b:
        rel = _ratio(_ratio(b.p50, teachers[1].p50), _ratio(a.p50, teachers[0].p50))
    return {"name": name, "in": "both" if a and b else ("a" if a else "b"),
            "a": _side(a), "b": _side(b),
            "quality_delta": qb - qa if qa is not None and qb is not None else None,
            "p50_ratio": _ratio(b and b.p50, a and a.p50), "p50_vs_teacher_ratio": rel,
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


def shared_teacher(a: RunReport, b: RunReport) -> tuple[tuple | None, str | None]:
    """``((A's teacher, B's teacher), None)`` when both runs measured the same teacher file,
    else ``(None, why not)``."""
    ta, tb = a.teacher, b.teacher
    missing = [n for n, r, t in (("A", a, ta), ("B", b, tb)) if t is None or t.name == r.final]
    if missing:
        return None, f"run {' and '.join(missing)} measured no teacher beside its final model"
    if ta.sha256 != tb.sha256:
        return None, f"the runs' teachers differ (sha256 {ta.sha256[:12]} -> {tb.sha256[:12]})"
    return (ta, tb), None


def speed_check(fa: ModelMeasurement, fb: ModelMeasurement, teachers: tuple | None,
                why_not: str | None) -> dict:
    """How run B's final model's speed compares with run A's: relative to the teacher both runs
    hold (``basis: teacher``), else in absolute time (``basis: absolute``) with a warning."""
    absolute = _ratio(fb.p50, fa.p50)
    if teachers is None:
        return {"basis": "absolute", "ratio": absolute, "absolute_ratio": absolute,
                "warning": f"{why_not}: the final model's p50 is compared in absolute time "
                           "across runs, which machine load and drift move too"}
    ta, tb = teachers
    rel_a, rel_b = _ratio(fa.p50, ta.p50), _ratio(fb.p50, tb.p50)
    return {"basis": "teacher", "ratio": _ratio(rel_b, rel_a), "absolute_ratio": absolute,
            "final_over_teacher_a": rel_a, "final_over_teacher_b": rel_b,
            "teacher_ratio": _ratio(tb.p50, ta.p50), "teacher_sha256": ta.sha256, "warning": None}


def compare_reports(a: RunReport, b: RunReport, tolerance: float = 0.10,
                    quality_tolerance: float = 0.005,
                    config: tuple[list[KeyDiff], str | None] = ([], None)) -> dict:
    """Models side by side and the verdict on run B's final model against run A's.

    Args:
        tolerance: allowed slowdown of the final model's p50 relative to the teacher (0.10 =
            10%), or in absolute time when the runs' teachers differ.
        quality_tolerance: allowed loss of the headline quality, in its own units
            (0.005 = 0.5 percentage points of accuracy).
        config: the settings that differ and why they were not compared (``compare_configs``).
    """
    ma, mb = {m.name: m for m in a.models}, {m.name: m for m in b.models}
    teachers, why_not = shared_teacher(a, b)
    names = list(ma) + [n for n in mb if n not in ma]
    rows = [model_row(n, ma.get(n), mb.get(n), teachers) for n in names]
    fa, fb = a.model(a.final), b.model(b.final)
    final: dict[str, Any] = {"a": a.final, "b": b.final, "checked": False}
    if fa is not None and fb is not None:
        row = model_row("final", fa, fb)
        speed = speed_check(fa, fb, teachers, why_not)
        final.update({"checked": True, "metric": fb.metric,
                      "quality_a": row["a"]["quality"], "quality_b": row["b"]["quality"],
                      "p50_a_ms": row["a"]["p50_ms"], "p50_b_ms": row["b"]["p50_ms"],
                      **{k: row[k] for k in ("quality_delta", "p50_ratio", "size_ratio")},
                      "speed": speed})
        final.update(_verdict(final, fb, tolerance, quality_tolerance))
    settings = [k for k in ("threads", "opt_level")
                if fa and fb and getattr(fa, k) != getattr(fb, k)]
    diffs, config_note = config
    return {"tolerance": tolerance, "quality_tolerance": quality_tolerance,
            "runs": {k: {"pipeline": r.pipeline, "final": r.final, "status": r.status}
                     for k, r in (("a", a), ("b", b))},
            "models": rows, "final": final,
            "machine_differences": fingerprint_differences(a, b),
            "settings_differ": settings,
            "config_differences": [{"key": d.key, "a": d.a, "b": d.b} for d in diffs],
            "config_note": config_note}


def _verdict(row: dict, fb: ModelMeasurement, tolerance: float, quality_tolerance: float) -> dict:
    higher = fb.higher_is_better
    speed = row["speed"]
    d, r = row["quality_delta"], speed["ratio"]
    lost = d is not None and ((d < -quality_tolerance) if higher else (d > quality_tolerance))
    slower = r is not None and r > 1 + tolerance
    reasons = []
    if slower:
        basis = ("relative to the teacher" if speed["basis"] == "teacher"
                 else "in absolute time, the teachers differ")
        reasons.append(f"p50 {r:.2f}x run A's {basis} (tolerance {tolerance:.0%})")
    if lost:
        reasons.append(f"{fb.metric} {_delta_text(fb.metric, d)} (tolerance "
                       f"{_delta_text(fb.metric, quality_tolerance).lstrip('+')})")
    return {"slower": slower, "quality_lost": lost, "regressed": slower or lost,
            "reasons": reasons, "higher_is_better": higher}


def _delta_text(metric: str, d: float | None) -> str:
    return fmt_delta(metric, d)


def _ratio_text(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _table(result: dict) -> list[str]:
    head = ("model", "quality A", "quality B", "delta", "p50 A ms", "p50 B ms", "ratio",
            "vs teacher", "size A", "size B", "ratio")
    table = [head]
    for row in result["models"]:
        metric = (row["b"] or row["a"])["metric"]
        a, b = row["a"] or _NONE, row["b"] or _NONE
        table.append((row["name"], fmt_quality(metric, a["quality"]),
                      fmt_quality(metric, b["quality"]),
                      _delta_text(metric, row["quality_delta"]),
                      _ms(a["p50_ms"]), _ms(b["p50_ms"]), _ratio_text(row["p50_ratio"]),
                      _ratio_text(row["p50_vs_teacher_ratio"]),
                      human(a["bytes"], "B"), human(b["bytes"], "B"),
                      _ratio_text(row["size_ratio"])))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head))]
    return ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in table]


def format_comparison(result: dict, dir_a: Path, dir_b: Path) -> str:
    """The comparison as a text table plus the final model's verdict and any caveats."""
    ra, rb = result["runs"]["a"], result["runs"]["b"]
    lines = [f"A  {dir_a}  ({ra['pipeline']}, final {ra['final']}, {ra['status'] or 'done'})",
             f"B  {dir_b}  ({rb['pipeline']}, final {rb['final']}, {rb['status'] or 'done'})", ""]
    lines += _table(result)
    lines += ["", *_speed_lines(result["final"]), _final_line(result)]
    lines += _config_lines(result)
    if result["machine_differences"]:
        lines.append("note: the runs' machines differ (" + "; ".join(result["machine_differences"])
                     + "): latencies from different machines or days are only roughly comparable")
    if result["settings_differ"]:
        lines.append("note: the final models were measured with different "
                     + " and ".join(result["settings_differ"]) + ": the latency ratio mixes "
                     "model and settings")
    return "\n".join(lines)


def _speed_lines(final: dict) -> list[str]:
    if not final["checked"]:
        return []
    s = final["speed"]
    if s["warning"]:
        return [f"warning: {s['warning']}"]
    return [f"speed: final p50 / teacher p50 {s['final_over_teacher_a']:.4f} in A, "
            f"{s['final_over_teacher_b']:.4f} in B: {_ratio_text(s['ratio'])}; the same teacher "
            f"file (sha256 {s['teacher_sha256'][:12]}) moved {_ratio_text(s['teacher_ratio'])} "
            "between the runs"]


def _config_lines(result: dict) -> list[str]:
    if result["config_note"]:
        return [f"note: {result['config_note']}"]
    diffs = result["config_differences"]
    if not diffs:
        return [f"settings: the same ({RESOLVED})"]
    return ([f"settings: {len(diffs)} key{'s differ' if len(diffs) > 1 else ' differs'} "
             f"({RESOLVED}, A -> B):"] + [f"  {d['key']}: {d['a']} -> {d['b']}" for d in diffs])


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _final_line(result: dict) -> str:
    f = result["final"]
    if not f["checked"]:
        return (f"final: not compared (run A final {f['a']!r}, run B final {f['b']!r}: "
                "a final model is missing from a report)")
    verdict = "REGRESSED: " + "; ".join(f["reasons"]) if f["regressed"] else "no regression"
    name = f["b"] if f["a"] == f["b"] else f"{f['a']} -> {f['b']}"
    s = f["speed"]
    speed = (f"p50 {_ratio_text(s['ratio'])} relative to the teacher (absolute "
             f"{_ratio_text(s['absolute_ratio'])})" if s["basis"] == "teacher"
             else f"p50 {_ratio_text(s['ratio'])} absolute")
    return (f"final {name}: {f['metric']} {_delta_text(f['metric'], f['quality_delta'])}, "
            f"{speed}, size {_ratio_text(f['size_ratio'])}: {verdict}")
