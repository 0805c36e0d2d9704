"""Assemble report.json (the contract in DESIGN.md) from the engine's records and the typed
measurements, and write it with its renderings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.artifacts import ModelMeasurement
from compress.common.env import machine, versions
from compress.common.files import read_json
from compress.stage_reports import StageReport, Unread, read_report


@dataclass
class StepRecord:
    """One step of a run as the report shows it."""

    name: str  # the step's folder, e.g. "01-distill"
    kind: str
    status: str  # done | skipped | failed
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def assemble(pipeline: str, config_sha256: str, device: str, records: list[StepRecord],
             measurements: list[ModelMeasurement], final: str | None, failed: bool,
             run_dir: Path) -> dict:
    """The report of this run. A failed run without measurements of its own keeps the last good
    run's, marked as such."""
    models = [m.as_dict() for m in measurements]
    previous = _previous(run_dir) if failed and not models else None
    if previous:
        models, final = previous.get("models", []), previous.get("final")
    names = [m["name"] for m in models]
    return {
        "pipeline": pipeline,
        "config_sha256": config_sha256,
        "device": device,
        "status": "failed" if failed else "done",
        "stages": [
            {"name": r.kind, "kind": r.kind, "dir": r.name, "status": r.status,
             "seconds": round(r.seconds, 3), "metrics": r.metrics, **({"error": r.error} if r.error else {})}
            for r in records
        ],
        **({"models_from": "previous successful run"} if previous and models else {}),
        "models": models,
        "final": final if final in names else (names[-1] if names else final),
        "versions": versions(),
        "machine": machine(),
    }


def read_stage(stage: dict) -> StageReport | Unread:
    """A stored stage's metrics (report.json) as its stage's typed report, or ``Unread`` with why
    not (a failed stage, or a report of another version)."""
    return read_report(str(stage.get("kind", "")), stage.get("metrics") or {})


def _previous(run_dir: Path) -> dict | None:
    report = read_json(run_dir / "report.json")
    ok = isinstance(report, dict) and report.get("status") == "done" and report.get("models")
    return report if ok else None
