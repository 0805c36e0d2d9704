"""Moved to ``compress.records.stage_reports`` (the typed records floor); kept so that
``from compress.stage_reports import ...`` goes on working."""

from compress.records.stage_reports import (  # noqa: F401
    AutoChoice,
    BenchmarkReport,
    Calibration,
    DistillReport,
    ExportReport,
    Fp32Side,
    History,
    Int8Side,
    OnnxTeacherReport,
    ParityReport,
    PruneReport,
    PruneStep,
    QatTraining,
    QuantTrial,
    QuantizeReport,
    ReadinessReport,
    ReadinessRow,
    Record,
    SensitiveTensor,
    StageReport,
    TeacherReport,
    Unread,
    REPORTS,
    read_report,
)
