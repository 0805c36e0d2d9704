"""``report.html``: one self-contained page per run (inline CSS, plots as data: URIs, no scripts,
no links out), plus each plot as a PNG under ``RUN_DIR/plots/``. It renders whatever the report
holds, so a failed run with no models still gets a page that says what failed.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from compress.records import ModelMeasurement, RunReport
from compress.records.stage_reports import PruneReport, QuantizeReport, ReadinessReport, Unread
from compress.report import plots
from compress.report.facts import runs_text, samples_text, ship, tokens_text
from compress.report.formats import (
    fmt_delta,
    fmt_ms,
    fmt_num,
    fmt_quality,
    human,
    is_percent,
    num,
)
from compress.report.llm import llm_html
from compress.report.search import search_section

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#222;
 max-width:1240px;font-size:14px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;
 padding-bottom:4px}h3{font-size:14px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:12.5px}
th,td{border:1px solid #d4d4d4;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f2f4f7;font-weight:600}td.l,th.l{text-align:left}
tr.final td{background:#eef6ff;font-weight:600}tr.kept td{background:#eefaf0}
.good{color:#17823b}.bad{color:#c62828}.muted{color:#777}
.status-done{color:#17823b;font-weight:700}.status-failed{color:#c62828;font-weight:700}
.error{background:#fdecea;border:1px solid #f5c2c0;padding:8px 12px;margin:10px 0;
 white-space:pre-wrap;font-family:monospace;font-size:12.5px}
img{max-width:100%;border:1px solid #eee;margin:4px 0}
.kv td:first-child{text-align:left;font-weight:600;background:#fafafa}.kv td{text-align:left}
p.note{font-size:12px;color:#555;margin:2px 0 8px}
"""


def e(value: Any) -> str:
    """Text escaped for HTML."""
    return html.escape(str(value), quote=True)


def _cls(good: bool | None) -> str:
    return "" if good is None else (' class="good"' if good else ' class="bad"')


def quality_delta(m: ModelMeasurement, ref: ModelMeasurement | None) -> str:
    """Quality change of ``m`` against ``ref`` as a coloured cell body (points for percents)."""
    if ref is None or ref is m:
        return '<span class="muted">-</span>'
    a, b = num(m.accuracy), num(ref.accuracy)
    if a is None or b is None:
        return "-"
    d = a - b
    text = fmt_delta(m.metric, d)
    better = d >= 0 if m.higher_is_better else d <= 0
    return f"<span{_cls(better if abs(d) > 1e-12 else None)}>{e(text)}</span>"


def ratio_cell(a: Any, b: Any, ref_is_self: bool = False, speed: bool = False) -> str:
    """``a / b`` as ``0.312x``; green below 1 (smaller or faster), red above 1.05.

    With ``speed`` the inverse follows in words (``3.2x faster``), easier to read than 0.04x.
    """
    x, y = num(a), num(b)
    if ref_is_self:
        return '<span class="muted">-</span>'
    if x is None or y is None or y <= 0 or x <= 0:
        return "-"
    r = x / y
    good = True if r < 0.995 else (False if r > 1.05 else None)
    words = ""
    if speed and abs(r - 1) >= 0.005:
        words = (f'<br><span class="muted">{1 / r:.3g}x faster</span>' if r < 1
                 else f'<br><span class="muted">{r:.3g}x slower</span>')
    return f"<span{_cls(good)}>{r:.3g}x</span>{words}"


def models_section(report: RunReport) -> str:
    """The models table with deltas against the teacher and against the previous model."""
    models = report.models
    if not models:
        return "<h2>Models</h2><p>No model was measured in this run.</p>"
    teacher = report.teacher
    metrics = {m.metric for m in models}
    one_metric = next(iter(metrics)) if len(metrics) == 1 else None
    head = ('<table id="models"><thead><tr><th class="l" rowspan="2">model</th>'
            '<th class="l" rowspan="2">stage</th><th rowspan="2">precision</th>'
            '<th rowspan="2">params</th><th rowspan="2">MACs</th><th rowspan="2">size</th>'
            f'<th rowspan="2">{e(one_metric or "quality")}</th><th class="l" rowspan="2">split</th>'
            f'<th rowspan="2">p50 ms{e(tokens_text(models))}</th><th rowspan="2">p90 ms</th>'
            '<th rowspan="2">runs</th>'
            '<th colspan="3">vs teacher</th><th colspan="3">vs previous model</th></tr><tr>'
            + "<th>quality</th><th>latency</th><th>size</th>" * 2 + "</tr></thead><tbody>")
    rows = []
    for i, m in enumerate(models):
        cells = [f'<td class="l">{e(m.name)}</td>', f'<td class="l">{e(m.stage)}</td>',
                 f"<td>{e(m.precision)}</td>", f"<td>{human(m.params)}</td>",
                 f"<td>{human(m.macs)}</td>", f"<td>{human(m.bytes, 'B')}</td>",
                 f"<td>{e(fmt_quality(m.metric, m.accuracy))}"
                 + ("" if one_metric else f'<br><span class="muted">{e(m.metric)}</span>') + "</td>",
                 f'<td class="l">{e(m.split)}</td>',
                 f"<td>{fmt_ms(m.p50)}</td>", f"<td>{fmt_ms(m.p90)}</td>",
                 f"<td>{m.runs:,}</td>"]
        for ref in (teacher, models[i - 1] if i else None):
            self_ref = ref is None or ref is m
            cells += [f"<td>{quality_delta(m, ref)}</td>",
                      f"<td>{ratio_cell(m.p50, ref and ref.p50, self_ref, True)}</td>",
                      f"<td>{ratio_cell(m.bytes, ref and ref.bytes, self_ref)}</td>"]
        cls = ' class="final"' if m.name == report.final else ""
        rows.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    m0 = models[0]
    note = (f"Latency: ONNX Runtime, {e(m0.threads)} thread(s), graph optimization "
            f"{e(m0.opt_level)}, {e(runs_text(models))} (timed in interleaved blocks of about "
            "equal time, so a faster model runs more calls). Quality on "
            f"{e(samples_text(models))}. Ratios are model / "
            "reference: below 1 is faster or smaller. Quality deltas in percentage points (pp) for "
            "accuracy-like metrics. The final model's row is highlighted.")
    return ("<h2>Models</h2>" + head + "".join(rows) + "</tbody></table>"
            + f'<p class="note">{note}</p>' + _extra_quality(models))


def _extra_quality(models: list[ModelMeasurement]) -> str:
    metrics = sorted({k for m in models for k in m.quality})
    if len(metrics) <= 1:
        return ""
    head = '<tr><th class="l">model</th><th class="l">split</th>' + "".join(
        f"<th>{e(k)}</th>" for k in metrics) + "</tr>"
    rows = "".join(
        f'<tr><td class="l">{e(m.name)}</td><td class="l">{e(m.split)}</td>'
        + "".join(f"<td>{e(fmt_quality(k, m.quality[k] if k in m.quality else None))}</td>"
                  for k in metrics)
        + "</tr>" for m in models)
    return f"<h3>All quality metrics</h3><table>{head}{rows}</table>"


def simple_table(rows: list[dict], columns: list[tuple[str, str]], row_class: Any = None,
                 table_id: str = "") -> str:
    """A table of ``rows`` with ``(key, header)`` columns; values escaped, numbers shortened."""
    tid = f' id="{e(table_id)}"' if table_id else ""
    head = "".join(f"<th>{e(h)}</th>" for _, h in columns)
    body = []
    for i, r in enumerate(rows):
        cls = row_class(i, r) if row_class else ""
        cells = "".join(f"<td>{e(_cell(r.get(k), k))}</td>" for k, _ in columns)
        body.append(f'<tr{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{cells}</tr>')
    return f"<table{tid}><tr>{head}</tr>{''.join(body)}</table>"


def _cell(v: Any, key: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) if v else "none"
    if isinstance(v, float):
        return fmt_quality(key, v) if is_percent(key) else fmt_num(v)
    return str(v)


def img_tag(png: Path | None, alt: str) -> str:
    """The PNG inlined as a data: URI (empty string when there is no plot)."""
    if png is None:
        return ""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "stage"


def _scalars(metrics: dict, limit: int = 6) -> str:
    """A few scalar metrics of a stage, ``key value`` joined; lists, dicts and markdown skipped."""
    parts = []
    for k, v in metrics.items():
        if k == "report_md" or isinstance(v, dict | list) or v is None:
            continue
        parts.append(f"{k} {_cell(v, k)}")
        if len(parts) == limit:
            break
    return "; ".join(parts)


def stages_section(report: RunReport) -> str:
    """Each stage's status, time, a few metrics, and the error of a failed stage."""
    if not report.stages:
        return "<h2>Stages</h2><p>No stage ran.</p>"
    rows = []
    for s in report.stages:
        note = s.error or _scalars(s.metrics)
        if isinstance(s.report, Unread) and s.metrics:
            note += f" (stored in another version's shape, {s.report.problem})"
        rows.append(f'<tr><td class="l">{e(s.dir)}</td>'
                    f'<td class="l">{e(s.kind)}</td>'
                    f'<td class="l status-{e(s.status)}">{e(s.status)}</td>'
                    f"<td>{s.seconds:.1f}</td>"
                    f'<td class="l">{e(note)}</td></tr>')
    return ('<h2>Stages</h2><table id="stages"><tr><th class="l">stage</th><th class="l">kind</th>'
            '<th class="l">status</th><th>seconds</th><th class="l">metrics / error</th></tr>'
            + "".join(rows) + "</table>")


def training_section(report: RunReport, plot_dir: Path) -> str:
    """Loss and validation curves of every stage that trained (prune recovery included)."""
    parts = []
    for s in report.stages:
        runs = [] if isinstance(s.report, Unread) else s.report.histories()
        png = plots.training_plot(s.dir, runs, plot_dir / f"training-{_slug(s.dir)}.png")
        if png is not None:
            parts.append(f"<h3>{e(s.dir)}</h3>" + img_tag(png, f"training curves of {s.dir}"))
    return "<h2>Training curves</h2>" + "".join(parts) if parts else ""


PRUNE_COLUMNS = [("step", "step"), ("ratio", "ratio"), ("params", "params"), ("macs", "MACs"),
                 ("p50_ms", "p50 ms"), ("speedup", "speedup"), ("acc_pruned", "val just pruned"),
                 ("acc_bn", "val BN recalibrated"), ("acc_recovered", "val recovered")]
TRIAL_COLUMNS = [("float_layers", "layers kept in float"), ("accuracy", "val accuracy"),
                 ("top1_agreement", "top-1 agreement"), ("cosine", "cosine"), ("p50_ms", "p50 ms"),
                 ("fp32_p50_ms", "fp32 p50 ms"), ("speedup", "speedup")]


def prune_section(report: RunReport, plot_dir: Path) -> str:
    """Each prune stage's trajectory: a table and a plot."""
    parts = []
    for s in report.stages:
        typed, name = s.report, s.dir
        if not isinstance(typed, PruneReport) or not typed.trajectory:
            continue
        rows = [{**r.as_dict(), "params": human(r.params), "macs": human(r.macs)} for r in typed.trajectory]
        png = plots.prune_plot(typed.trajectory, plot_dir / f"prune-{_slug(name)}.png")
        parts.append(f"<h3>{e(name)}</h3>" + simple_table(rows, PRUNE_COLUMNS, table_id="prune")
                     + img_tag(png, f"prune trajectory of {name}"))
    return "<h2>Prune trajectory</h2>" + "".join(parts) if parts else ""


def quantize_section(report: RunReport) -> str:
    """Each quantize stage's trials (which layers stayed float), the one kept, and why."""
    parts = []
    for s in report.stages:
        typed, name = s.report, s.dir
        if not isinstance(typed, QuantizeReport) or not typed.trials:
            continue
        kept = typed.kept_trial()
        rows = [t.as_dict() for t in typed.trials]
        # argmax agreement means nothing for a model without labels (an embedding): cosine says it
        columns = TRIAL_COLUMNS if typed.int8.accuracy is not None else [
            c for c in TRIAL_COLUMNS if c[0] not in ("accuracy", "top1_agreement")]
        note = (f"kept: {typed.kept}" + (f" ({_cell(typed.int8.float_layers)} in float)" if kept is not None
                                          else " (the input model)") + f" - {typed.reason}")
        parts.append(f"<h3>{e(name)}</h3>"
                     + simple_table(rows, columns, lambda i, _r, k=kept: "kept" if i == k else "",
                                    "trials")
                     + f'<p class="note">{e(note)}</p>')
    return "<h2>Quantization trials</h2>" + "".join(parts) if parts else ""


def readiness_section(report: RunReport) -> str:
    """Which share of each model's graph mobile execution providers (NNAPI, CoreML) would take."""
    rows = []
    for s in report.stages:
        typed = s.report
        if not isinstance(typed, ReadinessReport):
            continue
        for model, eps in typed.readiness.items():
            for ep, r in eps.items():
                rows.append({"model": model, "target": ep, **r.as_dict(),
                             "fraction": fmt_quality("accuracy", r.fraction)})
    if not rows:
        return ""
    cols = [("model", "model"), ("target", "execution provider"), ("fraction", "supported nodes"),
            ("partitions", "partitions"), ("unsupported_ops", "unsupported ops")]
    return "<h2>Mobile readiness</h2>" + simple_table(rows, cols, table_id="readiness")


def machine_section(report: RunReport) -> str:
    """The machine fingerprint and the library versions the numbers were measured with."""
    mach = report.machine
    rows = [(k, v) for k, v in (("cpu", mach.cpu), ("cores", mach.cores), ("os", mach.os))
            if v is not None]
    if mach.flags:
        rows.append(("ISA flags", " ".join(str(f) for f in mach.flags)))
    if mach.machine is not None:
        rows.append(("machine", mach.machine))
    rows += list((mach.model_extra or {}).items()) + list(report.versions.items())
    if report.config_sha256:
        rows.append(("config sha256", report.config_sha256))
    if not rows:
        return ""
    body = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in rows)
    return f'<h2>Machine and versions</h2><table class="kv">{body}</table>'


def header_section(report: RunReport) -> str:
    """Pipeline name, status, final model, device; the error of a failed run in a box."""
    errors = [f"{s.dir}: {s.error}" for s in report.stages if s.error]
    failure = report.failure
    if failure and failure.message and failure.reason != "error":  # a gate or an interrupt
        errors.insert(0, f"{failure.reason}: {failure.message}")
    box = "".join(f'<div class="error">{e(x)}</div>' for x in errors)
    shipped = ship(report)
    if shipped is not None:
        text = e(shipped.text(code="\0")).split("\0")  # paths in <code>, the rest as text
        body = "".join(f"<code>{t}</code>" if i % 2 else t for i, t in enumerate(text))
        box = f'<p id="ship">{"<b>" + body + "</b>" if not shipped.failed else body}</p>' + box
    if report.status == "failed" and not errors:
        box = '<div class="error">The run failed before any stage reported an error.</div>'
    return (f"<h1>compress run: {e(report.pipeline)}</h1>"
            f'<p>Status: <span class="status-{e(report.status)}">{e(report.status)}</span> &middot; '
            f"final model: <b>{e(report.final_label)}</b> &middot; "
            f"device: {e(report.device)}</p>" + box
            + (f'<p class="note">Models shown come from the {e(report.models_from)}.</p>'
               if report.models_from else ""))


def render_html(report: RunReport, run_dir: Path) -> str:
    """The page as a string; plots are written under ``run_dir/plots`` on the way."""
    plot_dir = Path(run_dir) / "plots"
    pareto = plots.pareto_plot(report.models, plot_dir / "pareto.png", report.final)
    latency = plots.latency_plot(report.models, Path(run_dir), plot_dir / "latency.png")
    body = [header_section(report), models_section(report), llm_html(report)]
    if pareto is not None:
        body.append('<h2>Quality vs latency</h2><div id="pareto">'
                    + img_tag(pareto, "quality vs latency, Pareto front") + "</div>")
    if latency is not None:
        body.append("<h2>Latency distribution</h2>" + img_tag(latency, "latency per model"))
    body += [stages_section(report), training_section(report, plot_dir),
             prune_section(report, plot_dir), quantize_section(report),
             readiness_section(report), search_section(report, plot_dir), machine_section(report)]
    title = f"compress run: {report.pipeline}"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(b for b in body if b) + "</body></html>\n")


def write_html(report: RunReport, run_dir: Path) -> Path:
    """Write ``RUN_DIR/report.html`` (self-contained) and the plots as ``RUN_DIR/plots/*.png``."""
    from compress.common.files import write_text

    run_dir = Path(run_dir)
    return write_text(run_dir / "report.html", render_html(report, run_dir))
