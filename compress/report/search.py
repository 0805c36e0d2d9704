"""The report's search section: every trial of a ``compress search`` on one plot (validation
quality against the objective; feasible and infeasible marked, the front joined, the chosen one
highlighted) and a table of the Pareto front. Drawn from report.json's ``search`` object (a ``SearchRecord``)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from compress.common.files import atomic_write
from compress.common.numbers import fmt_quality
from compress.common.numbers import num as _num
from compress.records import RunReport, SearchRecord, TrialRecord


def e(value: Any) -> str:
    return escape(str(value), quote=True)


def _q(metric: str, v: Any) -> str:
    return fmt_quality(metric, v)


def _g(v: Any, digits: int = 4) -> str:
    x = _num(v)
    return "-" if x is None else f"{x:.{digits}g}"


def search_labels(s: SearchRecord, plotted: list[TrialRecord], metric: str) -> tuple[str, str, str]:
    """The search plot's title and axis labels, with the number of trials it draws."""
    feasible = sum(t.feasible for t in plotted)
    title = (f"{len(plotted)} of {len(s.trials)} trials trained and measured "
             f"({feasible} feasible)")
    xlabel = "p50 ms on the target (each trial's own run)" if s.objective == "latency" else "bytes"
    return title, xlabel, f"{metric} ({s.split} split)"


def search_plot(s: SearchRecord, path: Path, metric: str = "accuracy") -> Path | None:
    """The trials as points: x the objective (log), y the validation quality."""
    def x(t: TrialRecord) -> float | None:  # the trial's own figure, as it was measured
        return _num(t.p50_ms if s.objective == "latency" else t.bytes)

    done = [t for t in s.trials if t.state == "complete" and x(t) is not None
            and _num(t.val_quality) is not None]
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
        pts = [t for t in done if t.feasible == feasible]
        if pts:
            ax.scatter([x(t) for t in pts], [t.val_quality for t in pts], s=28, **style)
    by_number = {t.number: t for t in done}
    front = [by_number[n] for n in s.pareto if n in by_number]
    if len(front) > 1:
        ax.plot([x(t) for t in front], [t.val_quality for t in front],
                color="#1f77b4", lw=1, ls="--", label="Pareto front")
    chosen = by_number.get(s.chosen)
    if chosen is not None:
        ax.scatter([x(chosen)], [chosen.val_quality], s=180, marker="*",
                   c="#d62728", zorder=5, label=f"chosen (trial {chosen.number})")
    need = _needed(s)
    if need is not None:
        ax.axhline(need, color="#d62728", lw=0.8, ls=":", label="quality needed")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    title, xlabel, ylabel = search_labels(s, done, metric)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if "accuracy" in metric:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.4g}%"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))


def _needed(s: SearchRecord) -> float | None:
    c, teacher = s.constraints, _num(s.teacher_val_quality)
    drop = c.max_accuracy_drop
    bars = [v for v in (c.min_quality, teacher - drop if teacher is not None and drop is not None
                        else None) if v is not None]
    return max(bars) if bars else None


def _params(t: TrialRecord) -> str:
    return ", ".join(f"{k}={v}" for k, v in t.params.items())


def _row(t: TrialRecord, metric: str, chosen: int | None) -> str:
    cls = ' class="chosen" style="font-weight:bold;background:#fde8e8"' if t.number == chosen else ""
    speed, fr = t.speedup_vs_teacher, t.final_round
    fr_speed = fr.speedup_vs_teacher if fr else None
    return (f"<tr{cls}><td>{t.number}</td><td class=\"l\">{e(_params(t))}</td>"
            f"<td>{e(_q(metric, t.val_quality))}</td><td>{e(_g(t.p50_ms, 4))}</td>"
            f"<td>{e(_g(t.bytes, 6))} B</td>"
            f"<td>{'-' if speed is None else e(_g(speed, 3)) + 'x'}</td>"
            f"<td>{e(_g(fr.p50_ms if fr else None, 4))}</td>"
            f"<td>{'-' if fr_speed is None else e(_g(fr_speed, 3)) + 'x'}</td>"
            f"<td>{'yes' if t.feasible else 'no'}</td><td>{e(_g(t.seconds, 3))}</td></tr>")


def search_section(report: RunReport, plot_dir: Path) -> str:
    """The ``Search`` section of report.html; empty for a run that was not a search."""
    s = report.search
    if s is None:
        return ""
    metric = report.models[0].metric if report.models else "accuracy"
    png = search_plot(s, Path(plot_dir) / "search.png", metric)
    n = s.counts
    cons = ", ".join(f"{k} {v}" for k, v in s.constraints.as_dict().items()) or "none"
    text = (f"<p>{n.trials} trials ({e(s.sampler)} sampler), objective "
            f"{e(s.objective)}, constraints on the validation split: {e(cons)}. "
            f"{n.complete} trained and measured, {n.feasible} feasible; "
            f"{n.stopped_untrained} stopped untrained (their untrained model could not "
            f"meet a latency or size bound or beat the best feasible trial), "
            f"{n.stopped_early} stopped early at distill epochs "
            f"{e(', '.join(str(x) for x in n.stopped_at_epochs) or '-')}, "
            f"{n.stopped_by_check} stopped by a check of their own pipeline they cannot "
            "pass (such as a prune budget out of reach), "
            f"{n.failed} failed. The feasible trials' final models were timed again "
            "together beside the teacher (final round); the choice reads that round. Chosen: "
            f"trial {e(s.chosen)}, measured on the test split above.</p>")
    head = ("<tr><th>trial</th><th>params</th><th>val quality</th><th>p50 ms</th><th>size</th>"
            "<th>speedup (val run)</th><th>p50 ms, final round</th><th>speedup, final round</th>"
            "<th>feasible</th><th>seconds</th></tr>")
    rows = "".join(_row(t, metric, s.chosen) for k in s.pareto if (t := s.trial(k)) is not None)
    img = "" if png is None else (f'<img src="data:image/png;base64,'
                                  f'{base64.b64encode(png.read_bytes()).decode("ascii")}" '
                                  'alt="search trials: validation quality vs objective">')
    return ('<h2>Search</h2><div id="search">' + text + img
            + f'<h3>Pareto front</h3><table id="search-front">{head}{rows}</table>'
            + confirm_section(s, metric) + '</div>')


def confirm_section(s: SearchRecord, metric: str) -> str:
    """The candidates trained again at more seeds: each seed's quality beside its teacher's, the
    worst drop, and whether it held; empty when the choice was not confirmed."""
    c = s.confirm
    if c is None:
        return ""
    seeds = [s_ for s_ in c.seeds]
    head = "".join(f"<th>seed {k}</th>" for k in seeds)
    rows = []
    for number in c.candidates:
        t = s.trial(number)
        if t is None:
            continue
        by_seed = {k.seed: k for k in t.seeds or []}
        cells = "".join(
            f"<td>{e(_q(metric, by_seed[k].val_quality))} / {e(_q(metric, by_seed[k].teacher_val_quality))}"
            f"</td>" if k in by_seed and by_seed[k].val_quality is not None
            else f"<td>{e(by_seed[k].error) if k in by_seed else '-'}</td>" for k in seeds)
        held = t.feasible and all(k in by_seed and by_seed[k].feasible for k in seeds)
        cls = ' class="chosen"' if number == s.chosen else ""
        rows.append(f"<tr{cls}><td>{number}</td><td class=\"l\">{e(_params(t))}</td>"
                    f"<td>{e(_q(metric, t.val_quality))} / {e(_q(metric, t.teacher_val_quality))}"
                    f"</td>{cells}<td>{e(_g(max(t.drops()), 3))}</td>"
                    f"<td>{'yes' if held else 'no'}</td></tr>")
    own = "the run's seed"
    one = ("" if c.one_seed_choice == s.chosen else
           f" One seed alone would have chosen trial {e(c.one_seed_choice)}.")
    text = (f"<p>Before choosing, the best candidates were trained again at seeds "
            f"{e(', '.join(str(k) for k in seeds))} (another split, teacher and training order) "
            f"and measured on each seed's validation split beside that seed's teacher; only a "
            f"candidate whose worst seed met the constraints could be chosen.{one}</p>")
    return (f'<h3>Confirmed at more seeds</h3>{text}<table id="search-confirm"><tr><th>trial</th>'
            f"<th>params</th><th>{own} (student / teacher)</th>{head}<th>worst drop</th>"
            f"<th>held</th></tr>{''.join(rows)}</table>")
