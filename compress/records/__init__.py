"""What crosses rooms on disk, typed and torch-free (floor 2: it imports only errors, common,
config and itself). Each file record keeps today's JSON keys, ``load``s with one line naming the
file and the bad or missing key, and ``dump``s atomically:

- ``StageRecord``: a stage folder's ``stage.json``;
- ``RunReport``: ``report.json`` (``ModelMeasurement``, the stages' typed reports, the gates,
  the failure, the search);
- ``SearchRecord`` / ``TrialRecord``: ``search.json`` and its trials.
"""

from compress.records.base import FileRecord, Record
from compress.records.measurement import ModelMeasurement
from compress.records.report import Failure, GateResult, Machine, RunReport, StageEntry
from compress.records.stage import ArtifactRecord, StageRecord
from compress.records.stage_reports import StageReport, Unread, read_report
from compress.records.trial import (
    Bounds,
    Confirmation,
    Counts,
    FinalRound,
    Probe,
    SearchRecord,
    SeedCheck,
    Stopped,
    StudyAttrs,
    TrialAttrs,
    TrialRecord,
    TrialResult,
)

__all__ = [
    "ArtifactRecord", "Bounds", "Confirmation", "Counts", "Failure", "FileRecord", "FinalRound", "GateResult", "Machine",
    "ModelMeasurement", "Probe", "Record", "RunReport", "SearchRecord", "SeedCheck", "StageEntry", "StageRecord",
    "StageReport", "Stopped", "StudyAttrs", "TrialAttrs", "TrialRecord", "TrialResult", "Unread",
    "read_report",
]
