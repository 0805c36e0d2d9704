"""Plots of a run's report as PNG files: quality vs latency, latency spreads, training curves,
the prune trajectory. Each function takes plain report data, writes one PNG and returns its path,
or None when the report holds nothing to draw. matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.records.stage_reports import epochs
from compress.report.formats import num

if TYPE_CHECKING:
    from compress.records import ModelMeasurement
    from compress.records.stage_reports import History, PruneStep

DPI = 110
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _figure(width: float, height: float, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # no pyplot: no global figure registry, safe in threads and servers
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _plain_log_x(ax) -> None:
    """Log-scale x with ticks written as plain numbers (0.05, 0.1, 1) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _percent_y(ax, metric: str) -> None:
    """Accuracy-like fractions on the y axis read as percentages."""
    from matplotlib.ticker import FuncFormatter

    if any(h in metric.lower() for h in ("accuracy", "recall", "agreement", "top1")):
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.4g}%"))


def _save(fig, path: Path, layout: bool = True) -> Path:
    from compress.common.files import atomic_write

    if layout:
        fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png",
                                                      metadata={"Software": None}))


def model_point(m: ModelMeasurement) -> tuple[float, float] | None:
    """(p50 ms, headline quality) of a model, or None when either is missing."""
    lat = num(m.p50)
    q = num(m.accuracy)
    if lat is None or q is None or lat <= 0:
        return None
    return lat, q


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and quality.

    Returned sorted by latency. Ties on both coordinates keep the first point.
    """
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], -math.inf
    for i in order:
        q = sign * points[i][1]
        if q > best:
            front.append(i)
            best = q
    return front


def pareto_labels(models: list[ModelMeasurement]) -> tuple[str, str]:
    """The axis labels of the quality-vs-latency plot, with the counts each point stands on."""
    from compress.report.facts import runs_range, samples_text, tokens_text

    m0 = models[0]
    xlabel = (f"latency p50{tokens_text(models)} (ms, log scale; {runs_range(models)})")
    ylabel = (f"{m0.metric} ({samples_text(models)})"
              + (" - higher is better" if m0.higher_is_better else " - lower is better"))
    return xlabel, ylabel


def pareto_plot(models: list[ModelMeasurement], path: Path, final: str | None = None) -> Path | None:
    """Quality (y) against p50 latency (x, log scale); marker area by file size; front drawn;
    the run's final model ringed and labelled."""
    pts = [(m, p) for m in models if (p := model_point(m)) is not None]
    if not pts:
        return None
    fig, (ax,) = _figure(7.5, 4.6)
    higher = pts[0][0].higher_is_better
    sizes = [num(m.bytes) or 0.0 for m, _ in pts]
    biggest = max(sizes) or 1.0
    labels = []
    for k, ((m, (x, y)), b) in enumerate(zip(pts, sizes, strict=True)):
        area = 40 + 460 * math.sqrt(b / biggest)
        ax.scatter([x], [y], s=area, color=COLORS[k % len(COLORS)], alpha=0.75,
                   edgecolors="black", linewidths=0.6, zorder=3)
        name = m.name
        if final is not None and name == final:
            ax.scatter([x], [y], s=area * 2.2, facecolors="none", edgecolors="#c62828",
                       linewidths=2.0, zorder=4, label=f"final: {name}")
            name = f"{name}, final"
        labels.append((f"{name} ({_size_text(b)})" if b else name, x, y, math.sqrt(area) / 2))
    front = pareto_front([p for _, p in pts], higher)
    fx, fy = [pts[i][1][0] for i in front], [pts[i][1][1] for i in front]
    ax.step(fx, fy, where="post", color="grey", linestyle="--", linewidth=1,
            label="Pareto front", zorder=2)
    _plain_log_x(ax)
    _percent_y(ax, pts[0][0].metric)
    xlabel, ylabel = pareto_labels([m for m, _ in pts])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("Quality vs latency (marker area ~ file size)")
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    ax.legend(loc="lower right" if higher else "upper right", fontsize=8)
    fig.tight_layout()
    _place_labels(fig, ax, labels)
    return _save(fig, path, layout=False)  # a new layout would move the axes under the labels


# label offsets in points, tried in order: right/left of the marker, then further up or down
_OFFSETS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 2.5), (1, -2.5), (-1, 2.5), (-1, -2.5),
            (0, 1.5), (0, -1.5), (1, 4), (1, -4)]


def _place_labels(fig, ax, labels: list[tuple[str, float, float, float]]) -> None:
    """Annotate each point at the first offset where its text overlaps no other label, no other
    marker and stays inside the axes; else at the offset with the least overlap."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pt = fig.dpi / 72.0
    markers = []
    for _, x, y, r in labels:
        cx, cy = ax.transData.transform((x, y))
        markers.append(Bbox.from_extents(cx - r * pt, cy - r * pt, cx + r * pt, cy + r * pt))

    def cost(box, own: int, taken: list) -> float:
        others = taken + [m for j, m in enumerate(markers) if j != own]
        inter = sum(max(0.0, min(box.x1, o.x1) - max(box.x0, o.x0))
                    * max(0.0, min(box.y1, o.y1) - max(box.y0, o.y0)) for o in others)
        outside = box.width * box.height - max(0.0, min(box.x1, frame.x1) - max(box.x0, frame.x0)) \
            * max(0.0, min(box.y1, frame.y1) - max(box.y0, frame.y0))
        return inter + 2 * outside

    def annotate(text: str, x: float, y: float, r: float, sx: int, sy: float, arrow: bool):
        # the text's near corner sits just off the marker's edge, diagonally
        xytext = (sx * (r * 0.7 + 2), sy * (r * 0.7 + 2) + (sy - (1 if sy > 0 else -1)) * 8)
        return ax.annotate(text, (x, y), textcoords="offset points", xytext=xytext,
                           ha={1: "left", -1: "right", 0: "center"}[sx],
                           va="bottom" if sy > 0 else "top", fontsize=8, zorder=4,
                           bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                                 "alpha": 0.85},
                           arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.6}
                           if arrow else None)

    taken: list = []
    for i, (text, x, y, r) in enumerate(labels):
        best = None
        for k, (sx, sy) in enumerate(_OFFSETS):
            ann = annotate(text, x, y, r, sx, sy, arrow=False)
            box = ann.get_window_extent(renderer).expanded(1.06, 1.3)
            c = cost(box, i, taken)
            if best is None or c < best[0]:
                if best is not None:
                    best[1].remove()
                best = (c, ann, box, k)
            else:
                ann.remove()
            if c == 0:
                break
        if best[3] >= 4:  # away from its marker: a leader line says whose label it is
            best[1].remove()
            annotate(text, x, y, r, *_OFFSETS[best[3]], arrow=True)
        taken.append(best[2])


def _size_text(b: float) -> str:
    return f"{b / 1e6:.2f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"


def load_samples(run_dir: Path, rel: str | None) -> Any:
    """The per-run latencies (ms) of a model, or None when absent or unreadable."""
    import numpy as np

    if not rel or not isinstance(rel, str):
        return None
    p = (run_dir / rel).resolve()
    if not p.is_relative_to(run_dir.resolve()):  # a report names files of its own run only
        return None
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError):
        return None
    arr = np.asarray(arr, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    return arr if arr.size else None


def latency_xlabel(models: list[ModelMeasurement]) -> str:
    """The latency plot's x label (a sequence model's token count included)."""
    from compress.report.facts import tokens_text

    return f"latency per run{tokens_text(models)} (ms, log scale); whiskers p1-p99"


def latency_plot(models: list[ModelMeasurement], run_dir: Path, path: Path) -> Path | None:
    """Box plots of each model's raw per-run latencies; models without samples are skipped."""
    data = [(m.name, s) for m in models if (s := load_samples(run_dir, m.samples)) is not None]
    if not data:
        return None
    fig, (ax,) = _figure(7.5, 0.9 + 0.5 * len(data))
    ax.boxplot([s for _, s in data], orientation="horizontal", whis=(1, 99), showfliers=True,
               flierprops={"markersize": 2, "alpha": 0.4})
    ax.set_yticks(range(1, len(data) + 1), [f"{n} (n={len(s):,})" for n, s in data], fontsize=8)
    ax.invert_yaxis()  # first model (the teacher) on top, as in the table
    _plain_log_x(ax)
    ax.set_xlabel(latency_xlabel([m for m in models if m.name in dict(data)]))
    ax.set_title("Latency distribution (n: timed runs of each model)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _save(fig, path)


def training_plot(name: str, runs: list[tuple[str, History]], path: Path) -> Path | None:
    """Loss and the validation metric per epoch of one stage's training runs (a stage report's
    ``histories()``: prune recovery runs follow one another)."""
    if not runs:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_val) = _figure(9, 3.4, ncols=2)
    offset, val_name = 0, None
    for k, (label, history) in enumerate(runs):
        color = COLORS[k % len(COLORS)]
        rows = epochs(history)
        key = next((r.val_key for r in rows if r.val_key), None)
        val_name = val_name or key
        xs = [offset + r.epoch for r in rows]
        loss = [num(r.loss) for r in rows]
        ax_loss.plot(xs, [v if v is not None else math.nan for v in loss], marker="o",
                     markersize=3, color=color, label=label)
        if key:
            val = [num(r.val) for r in rows]
            ax_val.plot(xs, [v if v is not None else math.nan for v in val], marker="o",
                        markersize=3, color=color, label=label)
        if len(runs) > 1:  # recovery runs follow one another along one axis
            offset = xs[-1]
    ax_loss.set_title(f"{name}: training loss")
    ax_val.set_title(f"{name}: {val_name or 'validation metric'}")
    for ax in (ax_loss, ax_val):
        ax.set_xlabel("epoch" + (" (runs in sequence)" if len(runs) > 1 else ""))
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(runs) > 1:
            ax.legend(fontsize=7)
    if val_name:
        _percent_y(ax_val, val_name)
    return _save(fig, path)


def prune_plot(rows: list[PruneStep], path: Path) -> Path | None:
    """Quality after each prune step (raw, BN-recalibrated, recovered) and the speedup."""
    if not rows:
        return None
    fig, (ax_q, ax_s) = _figure(9, 3.4, ncols=2)
    xs = [r.ratio for r in rows]
    xlabel = "pruning ratio"
    for k, (key, label) in enumerate((("acc_pruned", "just pruned"), ("acc_bn", "BN recalibrated"),
                                      ("acc_recovered", "after recovery"))):
        ys = [num(getattr(r, key)) for r in rows]
        if any(v is not None for v in ys):
            ax_q.plot(xs, [v if v is not None else math.nan for v in ys], marker="o",
                      color=COLORS[k], label=label)
    _percent_y(ax_q, "accuracy")
    ax_q.set_title("Prune trajectory: validation quality")
    ax_q.set_xlabel(xlabel)
    ax_q.legend(fontsize=7)
    speed = [num(r.speedup) for r in rows]
    macs = [num(r.macs) for r in rows]
    if any(v is not None for v in speed):
        ax_s.plot(xs, [v if v is not None else math.nan for v in speed], marker="o",
                  color=COLORS[0], label="measured speedup")
    if macs[0]:
        ax_s.plot(xs, [macs[0] / v if v else math.nan for v in macs], marker="s",
                  linestyle="--", color=COLORS[3], label="MAC reduction (ONNX count)")
    ax_s.set_title("Prune trajectory: speedup (x)")
    ax_s.set_xlabel(xlabel)
    ax_s.legend(fontsize=7)
    for ax in (ax_q, ax_s):
        ax.grid(True, alpha=0.3)
    return _save(fig, path)
