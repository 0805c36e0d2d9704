"""What the report states beside its numbers, read from the records: which file to ship, how many
timed runs and test samples each number stands on, and at how many tokens a sequence model's p50
was measured. report.md, report.html and the plots' labels all say it the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass

from compress.records import ModelMeasurement, RunReport
from compress.records.causal_lm import LLMBundleReport
from compress.records.stage_reports import ReadinessReport

_SEQ = re.compile(r"seq(\d+)")


def p50_tokens(m: ModelMeasurement) -> int | None:
    """The input length (tokens) the model's headline p50 was measured at: the entry of
    ``latency_by_length`` whose p50 is the headline's (the benchmark times the first of its
    ``seq_lens`` as the headline); None for a model without sequences."""
    if not m.latency_by_length:
        return None
    keys = [k for k, stats in m.latency_by_length.items() if "p50" in stats and stats["p50"] == m.p50]
    match = _SEQ.fullmatch((keys or list(m.latency_by_length))[0])
    return int(match[1]) if match else None


def tokens_text(models: list[ModelMeasurement]) -> str:
    """`` at 128 tokens`` when the sequence models' p50s share one length, else ''."""
    lengths = {p50_tokens(m) for m in models} - {None}
    return f" at {lengths.pop()} tokens" if len(lengths) == 1 else ""


def _count(n: int) -> str:
    return f"{n:,}"


def runs_text(models: list[ModelMeasurement]) -> str:
    """How many timed runs the latencies stand on: ``300 timed runs each`` or
    ``timed runs per model: teacher 300, student 15,000``."""
    runs = [(m.name, m.runs) for m in models]
    if len({n for _, n in runs}) == 1:
        return f"{_count(runs[0][1])} timed runs each"
    return "timed runs per model: " + ", ".join(f"{name} {_count(n)}" for name, n in runs)


def runs_range(models: list[ModelMeasurement]) -> str:
    """``300 runs`` or ``300-15,000 runs per model`` (for an axis label)."""
    counts = sorted({m.runs for m in models})
    if len(counts) == 1:
        return f"{_count(counts[0])} runs"
    return f"{_count(counts[0])}-{_count(counts[-1])} runs per model"


def samples_text(models: list[ModelMeasurement]) -> str:
    """``878 test samples``, per model when they differ, or ``the test split`` for a report
    written before the count was recorded."""
    split = models[0].split if models else "test"
    counts = {m.quality_samples for m in models}
    if None in counts or not counts:
        return f"the {split} split"
    if len(counts) == 1:
        return f"{_count(counts.pop())} {split} samples"
    return f"{split} samples per model: " + ", ".join(
        f"{m.name} {_count(m.quality_samples)}" for m in models)


@dataclass(frozen=True)
class Ship:
    """The file to ship: the final model's path in the run directory, and its bundle."""

    model: str
    path: str
    bundle: str | None  # the bundle folder, relative to the run directory
    bundle_models: tuple[str, ...]  # the model files in the bundle (model.onnx, model.ort)
    failed: bool  # the run failed (a gate): the file is named, not recommended

    def text(self, code: str = "`") -> str:
        """One sentence; ``code`` wraps paths (a backtick for Markdown)."""
        c = code
        head = ("Final model file (the run failed: do not ship it before the failure below is "
                "fixed): " if self.failed else "Ship: ")
        where = f"{c}{self.path}{c} ({self.model}, the final model)"
        if self.bundle is None:
            return (f"{head}{where}. No bundle: add a package stage, or run "
                    f"{c}compress deploy RUN_DIR --target TARGET{c}.")
        files = ", ".join(f"{c}{self.bundle}/{f}{c}" for f in self.bundle_models)
        return f"{head}{where}, packaged in {c}{self.bundle}/{c}" + (f" ({files})." if files else ".")


def ship(report: RunReport) -> Ship | None:
    """What to ship from this run, or None when it has no final model."""
    final = report.model(report.final)
    if final is None:
        return None
    bundle, files = None, ()
    for s in report.stages:
        typed = s.report
        bundled = isinstance(typed, ReadinessReport | LLMBundleReport)
        if s.status != "failed" and bundled and typed.model == final.name:
            bundle = typed.bundle
            files = tuple(f for f in typed.files if f.startswith(("model.", "decoder.")))
    return Ship(final.name, final.path, bundle, files, report.status == "failed")
