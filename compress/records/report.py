"""``report.json`` (the contract in DESIGN.md): the run's stages with their typed reports, the
models measured in ONNX Runtime, the gates, the failure, the text corpus and the search."""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import Field

from compress.records.base import FileRecord, Record
from compress.records.measurement import ModelMeasurement
from compress.records.stage_reports import StageReport, Unread, read_report
from compress.records.trial import SearchRecord


class StageEntry(Record):
    """One step of a run as the report shows it."""

    omit_none: ClassVar[tuple[str, ...]] = ("error",)

    name: str  # the stage kind (the contract's name), e.g. "distill"
    kind: str
    dir: str  # the step's folder, e.g. "01-distill"
    status: Literal["done", "skipped", "failed"]
    seconds: float
    metrics: dict[str, Any] = Field(default_factory=dict)  # the typed report, as stored
    error: str | None = None

    @cached_property
    def report(self) -> StageReport | Unread:
        """The stage's typed report, or ``Unread`` saying why not (a failed stage, or a report
        of another version)."""
        return read_report(self.kind, self.metrics)


class GateResult(Record):
    """One gate on the final model: its limit, the measured value and the verdict (report.json's
    ``gates`` entries; ``message`` is empty when it passed)."""

    omit_none: ClassVar[tuple[str, ...]] = ("verdict", "ci", "fingerprint_mismatch")

    gate: str
    value: float
    limit: float
    passed: bool
    message: str
    verdict: str | None = None  # the baseline gate's statistical verdict
    ci: list[float] | None = None  # the baseline gate's confidence interval of the ratio
    fingerprint_mismatch: list[str] | None = None  # what differs from the baseline's machine


class Failure(Record):
    """Why a run failed: a stage's error, a gate, or an interrupt."""

    reason: Literal["error", "gate", "interrupted", "terminated"]
    message: str


class Machine(Record):
    """The fingerprint of the machine the latencies were measured on."""

    model_config = Record.model_config | {"extra": "allow"}  # whatever else the platform says
    omit_none: ClassVar[tuple[str, ...]] = ("cpu", "cores", "machine", "os")

    cpu: str | None = None
    flags: list[str] = Field(default_factory=list)
    cores: int | None = None
    machine: str | None = None
    os: str | None = None

    @property
    def recorded(self) -> bool:
        """False for a report written without a machine fingerprint."""
        return bool(self.model_fields_set)


class RunReport(FileRecord):
    """A run's ``report.json``."""

    what: ClassVar[str] = "a run directory holding report.json"
    omit_none: ClassVar[tuple[str, ...]] = ("models_from", "gates", "failure", "corpus", "search")

    pipeline: str
    config_sha256: str
    device: str
    status: Literal["done", "failed"] = "done"
    stages: list[StageEntry]
    models_from: str | None = None  # "previous successful run": a failed run shows the last good
    models: list[ModelMeasurement]
    final: str | None
    versions: dict[str, Any] = Field(default_factory=dict)
    machine: Machine = Field(default_factory=Machine)
    gates: list[GateResult] | None = None
    failure: Failure | None = None
    corpus: dict[str, Any] | None = None  # the text corpus: each source's licence and counts
    search: SearchRecord | None = None

    def model(self, name: str | None) -> ModelMeasurement | None:
        """The measured model named ``name``, or None."""
        return next((m for m in self.models if m.name == name), None)

    @property
    def teacher(self) -> ModelMeasurement | None:
        """The model named ``teacher`` (else from the teacher stage, else the first)."""
        return (self.model("teacher") or next((m for m in self.models if m.stage == "teacher"), None)
                or (self.models[0] if self.models else None))

    @property
    def final_label(self) -> str:
        """The final model's name, or what a run without one means (never ``None``)."""
        if self.final:
            return self.final
        return "none (the run failed before a final model)" if self.status == "failed" else "none"
