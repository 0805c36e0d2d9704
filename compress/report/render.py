"""Write a run's report.json (the contract in DESIGN.md) and a human-readable report.md."""

from __future__ import annotations

from pathlib import Path

from compress.runtime.files import write_json, write_text


def _human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def models_table(models: list[dict]) -> str:
    rows = [
        "| model | stage | precision | params | MACs | size | accuracy (ORT) | p50 ms | p90 ms | speedup vs teacher |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        lat = m.get("latency_ms", {})
        rows.append(
            f"| {m['name']} | {m.get('stage', '')} | {m.get('precision', '')} | {_human(m.get('params'))} "
            f"| {_human(m.get('macs'))} | {_human(m.get('bytes'), 'B')} | {m['accuracy'] * 100:.2f}% "
            f"| {lat.get('p50', float('nan')):.4f} | {lat.get('p90', float('nan')):.4f} "
            f"| {m.get('speedup_vs_teacher', float('nan')):.2f}x |"
        )
    return "\n".join(rows)


def render_markdown(report: dict) -> str:
    lines = [f"# compress run: {report['pipeline']}", ""]
    lines += [f"Status: **{report.get('status', 'done')}**. Device: {report['device']}. "
              f"Final model: **{report.get('final')}**.", ""]
    if report["models"]:
        threads = report["models"][0].get("threads")
        lines += [f"## Models (ONNX Runtime CPU, {threads} thread(s), batch as exported)", "",
                  models_table(report["models"]), ""]
    lines += ["## Stages", "", "| stage | status | seconds | notes |", "|---|---|---|---|"]
    for s in report["stages"]:
        notes = s.get("error") or _stage_notes(s)
        lines.append(f"| {s.get('dir', s['name'])} | {s['status']} | {s['seconds']:.1f} | {notes} |")
    for s in report["stages"]:
        extra = s.get("metrics", {}).get("report_md")
        if extra:
            lines += ["", f"## {s.get('dir', s['name'])}", "", extra]
    return "\n".join(lines) + "\n"


def _stage_notes(stage: dict) -> str:
    m = stage.get("metrics", {})
    parts = []
    if "val_accuracy" in m:
        parts.append(f"val accuracy {m['val_accuracy'] * 100:.2f}% (torch)")
    if "max_abs_diff" in m:
        parts.append(f"parity max abs diff {m['max_abs_diff']:.2e}, agreement {m['top1_agreement'] * 100:.1f}%")
    for key in m.get("notes", []):
        parts.append(str(key))
    return "; ".join(parts)


def write_reports(report: dict, run_dir: Path) -> None:
    write_json(run_dir / "report.json", report)
    write_text(run_dir / "report.md", render_markdown(report))
