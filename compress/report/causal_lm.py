"""The parts of a report that a causal-lm run adds: a table of every decoder as a user feels it
(perplexity on the WikiText-2 test slice, next-token agreement and greedy continuations against
the teacher, time to first token and decode tokens/s at each measured context, size), the notes
of its stages, and its quantize trials. Drawn from the typed measurements and stage reports
(``compress.bench.decoder``, ``compress.records.causal_lm``); nothing for other runs."""

from __future__ import annotations

from compress.records import ModelMeasurement, RunReport
from compress.records.causal_lm import (
    DecoderQuantizeReport,
    KVExportReport,
    LLMBundleReport,
    LMDistillReport,
    LMTeacherReport,
)
from compress.report.formats import human

QUALITY = ("perplexity", "top1_agreement", "greedy_match")  # CausalLMTask.quality and the bench's


def _decoders(report: RunReport) -> list[ModelMeasurement]:
    return [m for m in report.models if m.decode_tokens_per_s is not None]


def decoding_markdown(report: RunReport) -> list[str]:
    """``## Decoding``: one row per decoder, the teacher first; empty for other runs."""
    rows = _decoders(report)
    if not rows:
        return []
    contexts = list(rows[0].decode_tokens_per_s)
    head = ["model", "precision", "size", "perplexity (test)", "top-1 agreement",
            "greedy match"] + [f"TTFT ms ({c})" for c in contexts] + [f"tokens/s ({c})"
                                                                      for c in contexts]
    lines = ["## Decoding (KV-cache decoders, ONNX Runtime, "
             f"{rows[0].threads} thread(s), {rows[0].clock or 'wall'} clock; quality against "
             f"{rows[0].name} on {rows[0].quality_samples} test windows)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in rows:
        ppl, agree, greedy = (m.quality[k] for k in QUALITY)
        cells = [m.name, m.precision, human(m.bytes, 'B'), f"{ppl:.3f}", f"{agree * 100:.1f}%",
                 f"{greedy * 100:.0f}%"]
        cells += [f"{m.ttft_ms[c]:.1f}" for c in contexts]
        cells += [f"{m.decode_tokens_per_s[c]:.2f}" for c in contexts]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def lm_notes(typed) -> list[str]:
    """The notes of a causal-lm stage report (none for other reports)."""
    if isinstance(typed, LMTeacherReport | KVExportReport):
        return [f"KV-cache parity max abs logit diff {typed.max_abs_logit_diff:.2e} over prefill + "
                f"{typed.parity_steps} steps, greedy tokens "
                + ("equal" if typed.greedy_tokens_equal else "DIFFER")]
    if isinstance(typed, LMDistillReport):
        return [f"kept blocks {typed.layers}; val perplexity {typed.val:.3f} (untrained "
                f"{typed.untrained_val:.3f}, teacher {typed.teacher_val:.3f}) after "
                f"{typed.train_tokens:,} tokens, top-{typed.top_k} at T={typed.temperature:g}"]
    if isinstance(typed, DecoderQuantizeReport):
        return [typed.reason]
    if isinstance(typed, LLMBundleReport):
        return ["the bundle's runner generates the graph's greedy tokens"
                if typed.runner_tokens_equal else "the bundle's runner DIFFERS from the graph"]
    return []


def decoder_trials_table(typed) -> str | None:
    """The quantize trials of a causal-lm run, or None."""
    if not isinstance(typed, DecoderQuantizeReport):
        return None
    lines = ["| precision | size | val perplexity | x fp32 | tokens/s | speedup | kept |",
             "|---|---|---|---|---|---|---|",
             f"| fp32 | - | {typed.fp32_perplexity:.3f} | 1 | {typed.fp32_tokens_per_s:.2f} | 1 | "
             f"{'yes' if typed.kept == 'fp32' else ''} |"]
    for t in typed.trials:
        lines.append(f"| {t.precision} | {human(t.bytes, 'B')} | {t.perplexity:.3f} | "
                     f"{t.perplexity_ratio:g} | {t.tokens_per_s:.2f} | {t.speedup:g}x | "
                     f"{'yes' if typed.kept == t.precision else ''} |")
    return "\n".join(lines)
