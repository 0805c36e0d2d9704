"""The report's search section: every trial of a ``compress search`` on one plot (validation
quality against the objective; feasible and infeasible marked, the front joined, the chosen one
highlighted) and a table of the Pareto front. Drawn from report.json's ``search`` object."""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from typing import Any

from compress.common.files import atomic_write


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def e(value: Any) -> str:
    return escape(str(value), quote=True)


def _q(metric: str, v: Any) -> str:
    x = _num(v)
    if x is None:
        return "-"
    return f"{x * 100:.2f}%" if "accuracy" in metric else f"{x:.4f}"


def _g(v: Any, digits: int = 4) -> str:
    x = _num(v)
    return "-" if x is None else f"{x:.{digits}g}"


def _x(t: dict, objective: str) -> float | None:
    return _num(t.get("p50_ms") if objective == "latency" else t.get("bytes"))


def search_plot(s: dict, path: Path, metric: str = "accuracy") -> Path | None:
    """The trials as points: x the objective (log), y the validation quality."""
    objective = s.get("objective", "latency")
    done = [t for t in s.get("trials", []) if t.get("state") == "complete"
            and _x(t, objective) is not None and _num(t.get("val_quality")) is not None]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(6.4, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for feasible, style in ((True, dict(c="#1f77b4", marker="o", label="feasible")),
                            (False, dict(c="#999999", marker="x", label="misses a constraint"))):
        pts = [t for t in done if bool(t.get("feasible")) == feasible]
        if pts:
            ax.scatter([_x(t, objective) for t in pts], [t["val_quality"] for t in pts], s=28, **style)
    by_number = {t["number"]: t for t in done}
    front = [by_number[n] for n in s.get("pareto", []) if n in by_number]
    if len(front) > 1:
        ax.plot([_x(t, objective) for t in front], [t["val_quality"] for t in front],
                color="#1f77b4", lw=1, ls="--", label="Pareto front")
    chosen = by_number.get(s.get("chosen"))
    if chosen is not None:
        ax.scatter([_x(chosen, objective)], [chosen["val_quality"]], s=180, marker="*",
                   c="#d62728", zorder=5, label=f"chosen (trial {chosen['number']})")
    need = _needed(s)
    if need is not None:
        ax.axhline(need, color="#d62728", lw=0.8, ls=":", label="quality needed")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.set_xlabel("p50 ms on the target" if objective == "latency" else "bytes")
    ax.set_ylabel(f"{metric} (validation)")
    if "accuracy" in metric:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.4g}%"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))


def _needed(s: dict) -> float | None:
    c, teacher = s.get("constraints") or {}, _num(s.get("teacher_val_quality"))
    bars = [v for v in (c.get("min_quality"),
                        teacher - c["max_accuracy_drop"] if teacher is not None
                        and c.get("max_accuracy_drop") is not None else None) if v is not None]
    return max(bars) if bars else None


def _params(t: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in (t.get("params") or {}).items())


def _row(t: dict, metric: str, chosen: Any) -> str:
    cls = ' class="chosen" style="font-weight:bold;background:#fde8e8"' if t["number"] == chosen else ""
    speed = t.get("speedup_vs_teacher")
    fr = t.get("final_round") or {}
    return (f"<tr{cls}><td>{t['number']}</td><td class=\"l\">{e(_params(t))}</td>"
            f"<td>{e(_q(metric, t.get('val_quality')))}</td><td>{e(_g(t.get('p50_ms'), 4))}</td>"
            f"<td>{e(_g(t.get('bytes'), 6))} B</td>"
            f"<td>{'-' if speed is None else e(_g(speed, 3)) + 'x'}</td>"
            f"<td>{e(_g(fr.get('p50_ms'), 4))}</td>"
            f"<td>{'-' if fr.get('speedup_vs_teacher') is None else e(_g(fr['speedup_vs_teacher'], 3)) + 'x'}</td>"
            f"<td>{'yes' if t.get('feasible') else 'no'}</td><td>{e(_g(t.get('seconds'), 3))}</td></tr>")


def search_section(report: dict, plot_dir: Path) -> str:
    """The ``Search`` section of report.html; empty for a run that was not a search."""
    s = report.get("search")
    if not s:
        return ""
    metric = next((m.get("metric", "accuracy") for m in report.get("models") or []), "accuracy")
    png = search_plot(s, Path(plot_dir) / "search.png", metric)
    n = s.get("counts", {})
    cons = ", ".join(f"{k} {v}" for k, v in (s.get("constraints") or {}).items()) or "none"
    text = (f"<p>{n.get('trials', 0)} trials ({e(s.get('sampler', ''))} sampler), objective "
            f"{e(s.get('objective', ''))}, constraints on the validation split: {e(cons)}. "
            f"{n.get('complete', 0)} trained and measured, {n.get('feasible', 0)} feasible; "
            f"{n.get('stopped_untrained', 0)} stopped untrained (their untrained model could not "
            f"meet a latency or size bound or beat the best feasible trial), "
            f"{n.get('stopped_early', 0)} stopped early at distill epochs "
            f"{e(', '.join(str(x) for x in n.get('stopped_at_epochs', [])) or '-')}, "
            f"{n.get('stopped_by_check', 0)} stopped by a check of their own pipeline they cannot "
            "pass (such as a prune budget out of reach), "
            f"{n.get('failed', 0)} failed. The feasible trials' final models were timed again "
            "together beside the teacher (final round); the choice reads that round. Chosen: "
            f"trial {e(s.get('chosen'))}, measured on the test split above.</p>")
    head = ("<tr><th>trial</th><th>params</th><th>val quality</th><th>p50 ms</th><th>size</th>"
            "<th>speedup (val run)</th><th>p50 ms, final round</th><th>speedup, final round</th>"
            "<th>feasible</th><th>seconds</th></tr>")
    by_number = {t["number"]: t for t in s.get("trials", [])}
    rows = "".join(_row(by_number[k], metric, s.get("chosen")) for k in s.get("pareto", [])
                   if k in by_number)
    img = "" if png is None else (f'<img src="data:image/png;base64,'
                                  f'{base64.b64encode(png.read_bytes()).decode("ascii")}" '
                                  'alt="search trials: validation quality vs objective">')
    return ('<h2>Search</h2><div id="search">' + text + img
            + f'<h3>Pareto front</h3><table id="search-front">{head}{rows}</table></div>')
