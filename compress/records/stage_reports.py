"""What each stage reports, as typed objects.

A stage fills one of these with what it measured; ``as_dict()`` is the stage's ``metrics`` in
report.json (the contract's keys: adding a field adds a key), and ``read_report`` parses a stored
stage back into its type, so ``report/`` dispatches on the type and reads fields instead of
guessing at dict shapes. A stored shape that does not parse (a report of an older version) is
said so, never half-read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError

from compress.records.base import History, Record, StageReport
from compress.records.causal_lm import REPORTS_LM


@dataclass(frozen=True)
class Epoch:
    """One epoch of a ``History``, read: ``val`` is its ``val_<metric>`` (``val_key``)."""

    epoch: int
    loss: float | None
    val: float | None
    val_key: str | None


def epochs(history: History) -> list[Epoch]:
    """The epochs of a stored training history, typed (a missing number is None)."""
    out = []
    for i, row in enumerate(history):
        key = next((k for k in row if k.startswith("val_")), None)
        out.append(Epoch(int(row.get("epoch", i + 1)), row.get("loss"),
                         row.get(key) if key else None, key))
    return out


# -- training stages ----------------------------------------------------------------------------


class DistillReport(StageReport):
    kind: ClassVar[str] = "distill"
    metric_keys: ClassVar[dict[str, str]] = {"val": "val_{metric}"}

    metric: str
    val: float  # best validation score (torch), the epoch it picked
    best_epoch: int
    samples_per_s: float
    history: History
    params: int
    macs: int

    def histories(self) -> list[tuple[str, History]]:
        return [("training", self.history)] if self.history else []


class ParityReport(StageReport):
    """PyTorch vs ONNX Runtime on test inputs: the values the task judged (classifiers: max abs
    difference and top-1 agreement; embedders: max abs difference and least cosine)."""

    omit_none: ClassVar[tuple[str, ...]] = ("top1_agreement", "cosine_min")

    max_abs_diff: float
    top1_agreement: float | None = None
    cosine_min: float | None = None
    parity_samples: int
    parity_split: str


class ExportReport(ParityReport):
    kind: ClassVar[str] = "export"

    bytes: int


class TeacherReport(ParityReport):
    """A torch teacher (trained here or loaded), exported and checked like the student."""

    kind: ClassVar[str] = "teacher"
    metric_keys: ClassVar[dict[str, str]] = {"val": "val_{metric}"}
    omit_none: ClassVar[tuple[str, ...]] = ("top1_agreement", "cosine_min", "best_epoch",
                                            "history", "optimum_baseline")

    metric: str | None = None  # None: loaded from a checkpoint, not trained here
    val: float | None = None
    best_epoch: int | None = None
    history: History | None = None
    bytes: int
    params: int
    macs: int
    optimum_baseline: str | None = None

    def histories(self) -> list[tuple[str, History]]:
        return [("training", self.history)] if self.history else []


class OnnxTeacherReport(StageReport):
    """A teacher brought as an ONNX file: copied in and checked, not trained or exported."""

    kind: ClassVar[str] = "teacher"

    source: str
    params: int
    io: list[str]  # what was renamed or fixed to fit the task's inputs and outputs
    external_data: list[str]  # external weight files copied beside model.onnx


class LLMTeacherReport(StageReport):
    """A causal LM that labelled the task's texts through a prompt: its prompt scorer exported to
    ONNX (parity checked against torch) with its own int8 beside it, and the label distributions
    the student distils from (``labels.npz`` in the teacher's folder)."""

    kind: ClassVar[str] = "teacher"

    llm: str  # what teacher.llm named
    llm_sha256: str  # the weights' content hash (keys the label cache)
    params: int
    labels: list[str]  # the student's logit order: the data's labels, then any other verbaliser
    calibrate: bool
    prior: list[float] | None  # the label prior on content-free inputs (calibration), label order
    texts: int  # distinct texts labelled (train, transfer, val, test)
    seconds_per_text: float | None  # labelling time of the texts computed in this run (None: cached)
    parity_max_abs: float  # max |ORT - torch| of the scorer's label log-probs
    prompt_median_tokens: int  # the test prompts' median length, where the LLM is timed
    bytes: int
    int8: str  # the LLM's own int8: dynamic or weight-only
    int8_bytes: int


# -- prune --------------------------------------------------------------------------------------


class PruneStep(Record):
    """One step of a prune schedule; step 0 is the unpruned input. MACs are counted on the
    step's exported ONNX graph (compress.bench.macs), like every model in the report."""

    step: int
    ratio: float
    params: int
    macs: int
    p50_ms: float | None = None
    speedup: float | None = None  # step-0 p50 / this p50, timed interleaved in one run
    acc_pruned: float | None = None
    acc_bn: float | None = None
    acc_recovered: float | None = None
    history: History = Field(default_factory=list, exclude=True)  # stored as PruneReport.histories


class PruneReport(StageReport):
    kind: ClassVar[str] = "prune"
    metric_keys: ClassVar[dict[str, str]] = {"val_before": "val_{metric}_before", "val": "val_{metric}"}
    metric_stored: ClassVar[bool] = True

    target: dict[str, int | float]  # the budget as configured: {"ratio": 0.25} or {"macs": 0.5}
    ratio: float
    params_before: int
    params: int
    macs_before: int
    macs: int
    p50_ms_before: float | None
    p50_ms: float | None
    speedup: float | None
    val_before: float | None
    val: float | None
    metric: str
    threads: int
    opt_level: str
    trajectory: list[PruneStep]
    histories_: list[History] = Field(alias="histories")  # each step's recovery epochs
    notes: list[str]

    def histories(self) -> list[tuple[str, History]]:
        return [(f"step {k + 1} recovery", h) for k, h in enumerate(self.histories_) if h]


# -- quantize -----------------------------------------------------------------------------------


class QuantTrial(Record):
    """One int8 candidate measured against its fp32 input (validation split)."""

    float_layers: list[str]  # ONNX nodes kept in float
    accuracy: float | None  # None for a model without labels
    top1_agreement: float
    cosine: float
    p50_ms: float
    fp32_p50_ms: float  # timed interleaved with this candidate
    speedup: float


class Int8Side(QuantTrial):
    bytes: int
    precision: Literal["int8", "mixed"]


class Fp32Side(Record):
    bytes: int
    accuracy: float | None
    p50_ms: float


class Calibration(Record):
    method: str
    samples: int
    split: str


class SensitiveTensor(Record):
    tensor: str
    sqnr_db: float
    nodes: list[str]  # the nodes that keep it in float when excluded


class AutoChoice(Record):
    """Mode auto: the best candidate of each mode, and the one chosen."""

    chosen: Literal["static", "dynamic"]
    static: QuantTrial
    dynamic: QuantTrial


class QatTraining(Record):
    metric_keys: ClassVar[dict[str, str]] = {"val_fake_quant": "val_{metric}_fake_quant"}

    metric: str
    val_fake_quant: float
    best_epoch: int
    kd: bool
    history: History


class QuantizeReport(StageReport):
    """Which int8 scheme, the candidates tried, the one kept (int8 or the fp32 input) and why,
    every figure measured in this run."""

    kind: ClassVar[str] = "quantize"
    omit_none: ClassVar[tuple[str, ...]] = ("qat", "auto", "call_floor_ms")

    mode: str  # "static", "dynamic", "qat" or "auto: <chosen>"
    scheme: str = Field(alias="target")  # the preset of compress.quant.ptq.TARGETS
    scheme_evidence: str = Field(alias="target_evidence")  # the CPU flag, or "configured"
    activation_type: str
    weight_type: str
    reduce_range: bool
    per_channel: bool
    scheme_why: str = Field(alias="target_note")
    qat: QatTraining | None = None
    auto: AutoChoice | None = None
    fp32: Fp32Side
    int8: Int8Side
    split: str
    fused_ops: dict[str, int]
    conv_count: int
    ort_ops: dict[str, int]
    float_layers: list[str]
    float_modules: list[str]
    trials: list[QuantTrial]
    sensitivity: list[SensitiveTensor]
    kept: Literal["int8", "fp32"]
    reason: str
    threads: int
    opt_level: str
    calibration: Calibration | None
    call_floor_ms: float | None = None  # ORT's per-call time on an Identity graph, when it mattered

    def kept_trial(self) -> int | None:
        """Index in ``trials`` of the int8 model kept as the stage's output (None: fp32 kept)."""
        if self.kept != "int8":
            return None
        return next((i for i, t in enumerate(self.trials) if t.float_layers == self.int8.float_layers),
                    None)

    def histories(self) -> list[tuple[str, History]]:
        return [("qat", self.qat.history)] if self.qat and self.qat.history else []


# -- benchmark and package ----------------------------------------------------------------------


class BenchmarkReport(StageReport):
    kind: ClassVar[str] = "benchmark"

    models: list[str]  # the names measured; the measurements are report.json's models
    split: str
    clock: str | None = None


class ReadinessRow(Record):
    """How much of one model one mobile execution provider would take."""

    fraction: float
    supported_nodes: int
    nodes: int
    partitions: int
    unsupported_ops: list[str]

    @classmethod
    def of(cls, checked: dict[str, Any]) -> ReadinessRow:
        """The row of one EP from ``compress.bundle.readiness``'s output (its other keys dropped)."""
        return cls(**{k: checked[k] for k in cls.model_fields})


class ReadinessReport(StageReport):
    kind: ClassVar[str] = "package"

    bundle: str
    model: str
    files: dict[str, int]  # bundle file -> bytes
    fixes: list[str]
    readiness: dict[str, dict[str, ReadinessRow]]  # model -> execution provider -> row


REPORTS: dict[str, tuple[type[StageReport], ...]] = {
    "teacher": (TeacherReport, OnnxTeacherReport, LLMTeacherReport),
    "distill": (DistillReport,),
    "prune": (PruneReport,),
    "export": (ExportReport,),
    "quantize": (QuantizeReport,),
    "benchmark": (BenchmarkReport,),
    "package": (ReadinessReport,),
}


class Unread(BaseModel):
    """A stored stage whose metrics are not in this version's shape (or a stage that failed)."""

    kind: str
    metrics: dict[str, Any]
    problem: str  # why it was not read as its type


def read_report(kind: str, metrics: dict[str, Any]) -> StageReport | Unread:
    """The typed report of a stored stage, or ``Unread`` saying why it is not one."""
    types = REPORTS.get(kind)
    if types is None:
        return Unread(kind=kind, metrics=metrics, problem=f"no report type for stage kind {kind!r}")
    if not metrics:
        return Unread(kind=kind, metrics=metrics, problem="no metrics")
    errors = []
    for t in types:
        try:
            return t.model_validate(metrics)
        except ValidationError as err:
            first = err.errors()[0]
            errors.append(f"{'.'.join(str(p) for p in first['loc']) or kind}: {first['msg']}")
    for t in REPORTS_LM.get(kind, ()):  # task causal-lm's; the problem names the others' errors
        try:
            return t.model_validate(metrics)
        except ValidationError:
            pass
    return Unread(kind=kind, metrics=metrics, problem="; ".join(errors))
