"""Render a run's report (``RunReport``, the contract in DESIGN.md) as report.md; stages return
data, the tables here are drawn from it."""

from __future__ import annotations

from pathlib import Path

from compress.common.files import write_text
from compress.records import ModelMeasurement, RunReport, StageEntry
from compress.records.stage_reports import (
    DistillReport,
    ParityReport,
    PruneReport,
    PruneStep,
    QuantizeReport,
    TeacherReport,
    Unread,
)
from compress.report.causal_lm import decoder_trials_table, decoding_markdown, lm_notes
from compress.report.facts import runs_text, samples_text, ship, tokens_text
from compress.report.formats import fmt_quality, human
from compress.report.llm import llm_markdown


def _quality(m: ModelMeasurement) -> str:
    return fmt_quality(m.metric, m.accuracy)


def models_table(models: list[ModelMeasurement]) -> str:
    """One row per model; the p50 header says the token count of a sequence model's p50, the
    runs column how many timed runs its p50 and p90 stand on."""
    metric = models[0].metric if models else "accuracy"
    split = models[0].split if models else "test"
    rows = [
        f"| model | stage | precision | params | MACs | size | {metric} (ORT, {split}) "
        f"| p50 ms{tokens_text(models)} | p90 ms | runs | speedup vs teacher |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        speed = m.speedup_vs_teacher
        p90 = m.p90 if m.p90 is not None else float("nan")
        rows.append(
            f"| {m.name} | {m.stage} | {m.precision} | {human(m.params)} "
            f"| {human(m.macs)} | {human(m.bytes, 'B')} | {_quality(m)} "
            f"| {m.p50:.4f} | {p90:.4f} | {m.runs:,} "
            f"| {'-' if speed is None else f'{speed:.2f}x'} |"
        )
    return "\n".join(rows)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def trajectory_table(rows: list[PruneStep]) -> str:
    """A prune stage's trajectory (validation-split quality per step; MACs counted on ONNX)."""
    lines = [
        "| step | ratio | params | MACs | ORT p50 ms | speedup | val pruned | val after BN | val recovered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p50 = "-" if r.p50_ms is None else f"{r.p50_ms:.4f}"
        speed = "-" if r.speedup is None else f"{r.speedup:.2f}x"
        lines.append(
            f"| {r.step} | {r.ratio:.2f} | {r.params:,} | {r.macs:,} | {p50} | {speed} "
            f"| {_pct(r.acc_pruned)} | {_pct(r.acc_bn)} | {_pct(r.acc_recovered)} |"
        )
    return "\n".join(lines)


def quantize_table(m: QuantizeReport) -> str:
    """A quantize stage's fp32-vs-int8 comparison and fallback trials (validation split)."""
    fp32, int8 = m.fp32, m.int8
    # argmax agreement means nothing for an embedding; its cosine column says it
    agree = "-" if int8.accuracy is None else f"{int8.top1_agreement * 100:.1f}%"
    lines = [
        "| model | precision | size | ORT accuracy (val) | top-1 agreement | cosine | p50 ms | speedup |",
        "|---|---|---|---|---|---|---|---|",
        f"| fp32 | fp32 | {fp32.bytes / 1e3:.1f} kB | {_pct(fp32.accuracy)} | 100% | 1 | {fp32.p50_ms:.4f} | 1.00x |",
        f"| int8 | {int8.precision} | {int8.bytes / 1e3:.1f} kB | {_pct(int8.accuracy)} "
        f"| {agree} | {int8.cosine:.4f} | {int8.p50_ms:.4f} | {int8.speedup:.2f}x |",
        "",
        f"Mode **{m.mode}**, target **{m.scheme}** ({m.scheme_evidence}: {m.scheme_why}); "
        "fused ops in ORT: " + (", ".join(f"{k} {v}" for k, v in m.fused_ops.items()) or "none")
        + f" (the fp32 model has {m.conv_count} Conv nodes). Layers kept in float: "
        + (", ".join(m.float_modules or m.float_layers) or "none")
        + f". Kept: **{m.kept}** ({m.reason}).",
    ]
    if len(m.trials) > 1:  # the fallback's steps: what each float layer bought and cost
        lines += ["", "| layers kept in float | ORT accuracy | p50 ms | fp32 p50 ms | speedup |", "|---|---|---|---|---|"]
        lines += [f"| {', '.join(t.float_layers) or 'none'} | {_pct(t.accuracy)} | {t.p50_ms:.4f} "
                  f"| {t.fp32_p50_ms:.4f} | {t.speedup:.2f}x |" for t in m.trials]
    return "\n".join(lines)


def render_markdown(report: RunReport) -> str:
    lines = [f"# compress run: {report.pipeline}", ""]
    failure = report.failure
    why = f" ({failure.reason}: {failure.message})" if failure and failure.message else ""
    lines += [f"Status: **{report.status}**{why}. Device: {report.device}. "
              f"Final model: **{report.final_label}**.", ""]
    shipped = ship(report)
    if shipped is not None:
        lines += [f"**{shipped.text()}**" if not shipped.failed else shipped.text(), ""]
    if report.models:
        m0 = report.models[0]
        lines += [f"## Models (ONNX Runtime CPU, {m0.threads} thread(s), batch as exported; "
                  f"quality on {samples_text(report.models)}; latency over "
                  f"{runs_text(report.models)})", "",
                  models_table(report.models), ""]
    lines += llm_markdown(report)  # an llm teacher's run: the cost ratio and agreement
    lines += decoding_markdown(report)  # a causal-lm run: its decoders as a user feels them
    lines += ["## Stages", "", "| stage | status | seconds | notes |", "|---|---|---|---|"]
    for s in report.stages:
        notes = s.error or _stage_notes(s)
        lines.append(f"| {s.dir} | {s.status} | {s.seconds:.1f} | {notes} |")
    for s in report.stages:
        table = _stage_table(s)
        if table:
            lines += ["", f"## {s.dir}", "", table]
    return "\n".join(lines) + "\n"


def _stage_table(stage: StageEntry) -> str | None:
    typed = stage.report
    if isinstance(typed, PruneReport) and typed.trajectory:
        return trajectory_table(typed.trajectory)
    if isinstance(typed, QuantizeReport) and typed.trials:
        return quantize_table(typed)
    return decoder_trials_table(typed)


def _stage_notes(stage: StageEntry) -> str:
    typed = stage.report
    if isinstance(typed, Unread):
        return f"metrics not read: {typed.problem}" if typed.metrics else ""
    parts = []
    if isinstance(typed, DistillReport | TeacherReport | PruneReport) and typed.val is not None:
        parts.append(f"val {typed.metric.replace('_', ' ')} {typed.val:.4f} (torch, val)")
    if isinstance(typed, ParityReport):
        agree = typed.top1_agreement
        parts.append(f"parity max abs diff {typed.max_abs_diff:.2e}"
                     + (f", agreement {agree * 100:.1f}%" if agree is not None else ""))
    if isinstance(typed, PruneReport):
        parts += typed.notes
    parts += lm_notes(typed)
    return "; ".join(parts)


def write_reports(report: RunReport, run_dir: Path) -> None:
    """report.json, report.md and the self-contained report.html with its plots."""
    from compress.report.html import write_html

    report.dump(run_dir / "report.json")
    write_text(run_dir / "report.md", render_markdown(report))
    write_html(report, run_dir)
