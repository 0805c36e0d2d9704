"""``stage.json``: what a finished stage folder holds (its resume key, config slice, the hashes
of its input, its output models and every file, its measurements and its report), written by
the engine when the folder is swapped in and read by resume, the step caches and the search."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from compress.records.base import FileRecord, Record
from compress.records.measurement import ModelMeasurement


class ArtifactRecord(Record):
    """A model a stage passed on or published. ``passthrough``: the stage handed its input on
    unchanged (a benchmark), so only the name is kept; else the file, relative to the folder."""

    omit_none: ClassVar[tuple[str, ...]] = ("path", "sha256", "precision", "meta")

    format: Literal["torch", "onnx", "passthrough"]
    name: str
    path: str | None = None
    sha256: str | None = None
    precision: str | None = None
    meta: dict[str, Any] | None = None


class StageRecord(FileRecord):
    """A finished stage's ``stage.json``."""

    what: ClassVar[str] = "a stage folder's stage.json (written by the engine)"

    name: str  # the folder, e.g. "02-prune"
    kind: str
    key: str  # the resume key: a hash of config, inputs, data, seed and device
    seconds: float
    device: str
    config: dict[str, Any]  # the stage's config slice, as the YAML resolved it
    status: Literal["done"]
    input_sha256: str | None
    output: ArtifactRecord
    published: list[ArtifactRecord]
    files: dict[str, str]  # file (relative to the folder) -> sha256
    measurements: list[ModelMeasurement]
    metrics: dict[str, Any]  # the stage's typed report as stored (records.stage_reports)
    versions: dict[str, Any]

    def finished(self, key: str) -> bool:
        """True when this is the record of a finished step under ``key``."""
        return self.status == "done" and self.key == key
