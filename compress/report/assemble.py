"""Assemble report.json (the contract in DESIGN.md) from the engine's step records and the typed
measurements, as a ``RunReport``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.common.env import machine, versions
from compress.errors import InputError
from compress.records import ModelMeasurement, RunReport, StageEntry


@dataclass
class StepRecord:
    """One step of a run as the engine saw it."""

    name: str  # the step's folder, e.g. "01-distill"
    kind: str
    status: str  # done | skipped | failed
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def entry(self) -> StageEntry:
        return StageEntry(name=self.kind, kind=self.kind, dir=self.name, status=self.status,
                          seconds=round(self.seconds, 3), metrics=self.metrics, error=self.error)


def assemble(pipeline: str, config_sha256: str, device: str, records: list[StepRecord],
             measurements: list[ModelMeasurement], final: str | None, failed: bool,
             run_dir: Path) -> RunReport:
    """The report of this run. A failed run without measurements of its own keeps the last good
    run's, marked as such."""
    models = list(measurements)
    previous = _previous(run_dir) if failed and not models else None
    if previous:
        models, final = previous.models, previous.final
    names = [m.name for m in models]
    return RunReport(
        pipeline=pipeline, config_sha256=config_sha256, device=device,
        status="failed" if failed else "done", stages=[r.entry() for r in records],
        models_from="previous successful run" if previous and models else None, models=models,
        final=final if final in names else (names[-1] if names else final),
        versions=versions(), machine=machine())


def _previous(run_dir: Path) -> RunReport | None:
    try:
        report = RunReport.load(run_dir / "report.json")
    except InputError:  # none, or not this version's: nothing to carry over
        return None
    return report if report.status == "done" and report.models else None
