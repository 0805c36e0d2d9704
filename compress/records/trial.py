"""The search's records: what a trial leaves in its Optuna attributes (``TrialAttrs``, with its
``TrialResult``), one trial as search.json lists it (``TrialRecord``), and ``search.json``
itself (``SearchRecord``, also report.json's ``search`` object)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, ConfigDict, Field

from compress.records.base import FileRecord, Record


class Stopped(Record):
    """Why a trial stopped before it was measured: its untrained probe (``probe``), a distill
    epoch's learning curve (``epoch``), or a check of its own pipeline it cannot pass (``check``)."""

    omit_none: ClassVar[tuple[str, ...]] = ("epoch", "quality", "needed", "same_as")

    at: Literal["probe", "epoch", "check"]
    epoch: int | None = None
    quality: float | None = None
    needed: float | None = None
    reason: str
    same_as: int | None = None  # stopped because an earlier trial with the same distill was


class Probe(Record):
    """The untrained candidate timed (and its best feasible rival beside it)."""

    omit_none: ClassVar[tuple[str, ...]] = ("rival", "rival_p50_ms", "ratio")

    p50_ms: float
    bytes: int
    seconds: float
    rival: int | None = None
    rival_p50_ms: float | None = None
    ratio: float | None = None


class TrialResult(Record):
    """A measured trial on the validation split (the trial's ``result`` attribute)."""

    val_quality: float
    teacher_val_quality: float
    p50_ms: float
    teacher_p50_ms: float
    speedup_vs_teacher: float | None
    bytes: int
    # the model's parameter count; studies of earlier versions stored it as "params"
    params_count: int | None = Field(validation_alias=AliasChoices("params_count", "params"))
    macs: int | None = None
    precision: str
    val_nll: float | None = None
    final: str
    final_path: str  # relative to the search folder
    teacher_path: str
    feasible: bool
    clock: str | None = None
    ran: list[str] = Field(default_factory=list)  # the steps it executed (not fetched, not resumed)


class TrialAttrs(Record):
    """A trial's Optuna user attributes, typed (``TrialAttrs.of(trial)``)."""

    model_config = ConfigDict(extra="ignore")

    result: TrialResult | None = None
    probe: Probe | None = None
    stopped: Stopped | None = None
    error: str | None = None
    constraints: dict[str, float] | None = None
    overrides: list[str] = Field(default_factory=list)
    worker: str | None = None
    seconds: float | None = None
    schedule: int | None = None  # the distill stage's epochs
    distill_key: str | None = None

    @classmethod
    def of(cls, trial: Any) -> TrialAttrs:
        return cls.model_validate(dict(trial.user_attrs))


class StudyAttrs(Record):
    """A study's Optuna user attributes, typed (``StudyAttrs.of(study)``)."""

    model_config = ConfigDict(extra="ignore")

    config_key: str | None = None  # the pipeline and space the study was made for
    teacher_val: float | None = None
    needed_quality: float | None = None  # in the 'higher is better' direction

    @classmethod
    def of(cls, study: Any) -> StudyAttrs:
        return cls.model_validate(dict(study.user_attrs))


class FinalRound(Record):
    """A feasible trial's final model timed again beside the teacher and the other trials."""

    p50_ms: float
    speedup_vs_teacher: float | None


class SeedCheck(Record):
    """A candidate trained again at another seed and measured on that seed's validation split
    beside that seed's teacher (a study attribute ``seed_check:TRIAL:SEED``)."""

    omit_none: ClassVar[tuple[str, ...]] = ("error",)

    seed: int
    val_quality: float | None  # None: the run failed (``error``)
    teacher_val_quality: float | None
    feasible: bool
    constraints: dict[str, float]
    seconds: float
    run: str  # its run folder, relative to the search folder
    error: str | None = None


class TrialRecord(Record):
    """One trial as search.json lists it."""

    omit_none: ClassVar[tuple[str, ...]] = ("seeds",)

    number: int
    params: dict[str, Any]  # the searched keys' values
    overrides: list[str]
    state: str  # complete, pruned, fail, running, waiting
    val_quality: float | None
    teacher_val_quality: float | None
    val_nll: float | None
    p50_ms: float | None
    bytes: int | None
    speedup_vs_teacher: float | None
    params_count: int | None  # the model's parameter count
    precision: str | None
    seconds: float | None
    feasible: bool
    constraints: dict[str, float] | None
    probe: Probe | None
    stopped: Stopped | None
    error: str | None
    retry_of: int | None
    worker: str | None
    run: str  # the trial's run folder, relative to the run directory
    stages_run: list[str] | None
    final_round: FinalRound | None = None
    seeds: list[SeedCheck] | None = None  # confirmed at more seeds (the run's own not listed)

    def drops(self, higher: bool = True) -> list[float]:
        """How far below its teacher the trial fell at each seed it was measured at (the run's
        own first; in the metric's direction: positive is worse than the teacher)."""
        sign = 1.0 if higher else -1.0
        pairs = [(self.teacher_val_quality, self.val_quality)] + [
            (c.teacher_val_quality, c.val_quality) for c in self.seeds or []]
        return [round(sign * (t - q), 6) for t, q in pairs if t is not None and q is not None]

    @classmethod
    def of(cls, number: int, params: Mapping[str, Any], state: str, attrs: TrialAttrs,
           retry_of: int | None) -> TrialRecord:
        res = attrs.result
        return cls(
            number=number, params=dict(params), overrides=attrs.overrides, state=state,
            val_quality=res and res.val_quality, teacher_val_quality=res and res.teacher_val_quality,
            val_nll=res and res.val_nll, p50_ms=res and res.p50_ms, bytes=res and res.bytes,
            speedup_vs_teacher=res and res.speedup_vs_teacher, params_count=res and res.params_count,
            precision=res and res.precision, seconds=attrs.seconds,
            feasible=bool(res and res.feasible), constraints=attrs.constraints, probe=attrs.probe,
            stopped=attrs.stopped, error=attrs.error, retry_of=retry_of, worker=attrs.worker,
            run=f"search/trial-{number:04d}", stages_run=res and res.ran)

    def objective(self, objective: str) -> float | None:
        """Latency: the final round's p50 (all feasible trials timed side by side) where there
        was one, else the trial's own; size: its bytes."""
        if objective != "latency":
            return self.bytes
        return self.final_round.p50_ms if self.final_round else self.p50_ms


class Counts(Record):
    target: int
    trials: int
    complete: int
    feasible: int
    stopped_untrained: int
    stopped_early: int
    stopped_at_epochs: list[int]
    stopped_by_check: int
    failed: int


class Bounds(Record):
    """The search's constraints as configured (validation split); unset ones are left out."""

    omit_none: ClassVar[tuple[str, ...]] = ("max_accuracy_drop", "min_quality", "max_bytes",
                                            "max_latency_ms")

    max_accuracy_drop: float | None = None
    min_quality: float | None = None
    max_bytes: int | None = None
    max_latency_ms: float | None = None


class Confirmation(Record):
    """How the choice was confirmed: the seeds besides the run's own, the candidates trained at
    them (in the order the choice preferred them), and what one seed alone would have chosen."""

    seeds: list[int]
    candidates: list[int]
    one_seed_choice: int | None
    worst_drop: float | None  # the chosen trial's worst seed, below its teacher (validation)
    spread: float | None  # the chosen trial's highest minus lowest validation quality over seeds


class SearchRecord(FileRecord):
    """``search.json``, and report.json's ``search`` object (with ``chosen_run_seconds``)."""

    what: ClassVar[str] = "a search's search.json"
    omit_none: ClassVar[tuple[str, ...]] = ("chosen_run_seconds", "confirm")

    study: str
    objective: Literal["latency", "size"]
    sampler: str
    constraints: Bounds
    split: str
    teacher_val_quality: float | None
    counts: Counts
    trials: list[TrialRecord]
    pareto: list[int]  # trial numbers, by objective
    tie: float
    chosen: int | None
    chosen_run_seconds: float | None = None
    confirm: Confirmation | None = None

    def trial(self, number: int | None) -> TrialRecord | None:
        return next((t for t in self.trials if t.number == number), None)
