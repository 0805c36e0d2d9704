"""The section of a run whose teacher is an LLM (``teacher.llm``): the per-query cost ratio as the
headline, and a table of the LLM, its int8 and each student: gold accuracy (the LLM's as
configured, and raw), the students' agreement with the LLM, p50 on each model's own input, the
cost ratios and queries per second per core. Drawn from the typed measurements the benchmark
wrote (``compress.bench.llm``); None for other runs."""

from __future__ import annotations

from html import escape

from compress.records import RunReport

HEADERS = ("model", "accuracy (gold, test)", "raw", "agreement with LLM", "input", "p50 ms",
           "cost ratio vs LLM fp32", "vs LLM int8", "queries/s/core")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _rows(report: RunReport) -> list[tuple[str, ...]] | None:
    llm = [m for m in report.models if m.llm_prompt_tokens is not None]
    students = [m for m in report.models if m.cost_ratio_vs_llm is not None]
    if not llm or not students:
        return None
    out = []
    for m in llm:
        out.append((m.name, _pct(m.accuracy), _pct(m.quality.get("accuracy_raw")), "-",
                    f"prompt, {m.llm_prompt_tokens} tokens", f"{m.p50:.4f}", "-", "-", _qps(m.p50)))
    int8 = llm[1].name if len(llm) > 1 else None
    for m in students:
        r = m.cost_ratio_vs_llm
        vs8 = r.vs(int8) if int8 else None
        out.append((m.name + (" (final)" if m.name == report.final else ""), _pct(m.accuracy), "-",
                    _pct(m.llm_agreement), "text", f"{r.student_p50_ms:.4f}", f"{r.teacher:.1f}x",
                    "-" if vs8 is None else f"{vs8:.1f}x", _qps(r.student_p50_ms)))
    return out


def _qps(p50_ms: float) -> str:
    return f"{1000.0 / p50_ms:,.1f}" if p50_ms > 0 else "-"


def headline(report: RunReport) -> str | None:
    """One sentence: what a query of the final model costs against the LLM's."""
    final = next((m for m in report.models if m.name == report.final), None)
    llm = [m for m in report.models if m.llm_prompt_tokens is not None]
    if final is None or final.cost_ratio_vs_llm is None or not llm:
        return None
    r = final.cost_ratio_vs_llm
    vs8 = r.vs(llm[1].name) if len(llm) > 1 else None
    peer = "" if vs8 is None else f" ({vs8:.1f}x vs its int8)"
    return (f"The final student answers a query {r.teacher:.1f}x cheaper than the LLM's fp32 "
            f"ONNX{peer}, agreeing with the LLM on {_pct(final.llm_agreement)} of the test texts; "
            f"gold accuracy {_pct(final.accuracy)} against the LLM's {_pct(llm[0].accuracy)}.")


def llm_markdown(report: RunReport) -> list[str]:
    """report.md lines (none for a run without an llm teacher)."""
    rows = _rows(report)
    if rows is None:
        return []
    lines = ["## The LLM beside its student (test split; each timed on its own input, interleaved)",
             "", f"**{headline(report)}**", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def llm_html(report: RunReport) -> str:
    """The same as an HTML section ('' for a run without an llm teacher)."""
    rows = _rows(report)
    if rows is None:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f'<h2>The LLM beside its student</h2><p class="headline"><b>{escape(headline(report))}'
            f'</b></p><table id="llm"><tr>{head}</tr>{body}</table>')


__all__ = ["headline", "llm_html", "llm_markdown"]
