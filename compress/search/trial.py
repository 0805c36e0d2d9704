"""One candidate of a search: its config, its untrained probe, its run, its validation measurement.

A trial's run is an ordinary engine run in ``search/trial-NNNN/`` of the pipeline with the
trial's ``--set`` values, minus the stages that look at the test split or write the bundle
(benchmark, package) and minus ``gates``; its final model is then measured on the **validation**
split beside the teacher (interleaved latency, ORT quality), which is what the search judges.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from compress.artifacts import ModelArtifact, ModelMeasurement
from compress.common.console import Console, current, use
from compress.config.paths import apply_override, message
from compress.config.pipeline import PipelineConfig, StageEntry
from compress.config.yamlmap import format_path
from compress.engine.run import Engine
from compress.engine.step_cache import FolderStore
from compress.errors import CompressError, ConfigError
from compress.train.checkpoint import EpochMetrics

SEARCH_ONLY = ("benchmark", "package")  # run for the chosen trial only


class TrialStopped(CompressError):
    """Raised from a training loop's epoch event when the trial cannot reach the constraint."""

    def __init__(self, epoch: int, quality: float, needed: float):
        self.epoch, self.quality, self.needed = epoch, quality, needed
        super().__init__(f"stopped at epoch {epoch}: best validation quality {quality:.4f}, "
                         f"cannot reach {needed:.4f}")


def pipeline_raw(raw: dict, overrides: list[str], drop: tuple[str, ...] = SEARCH_ONLY) -> dict:
    """The base mapping with the trial's overrides applied (on the user's stage indices), then
    without ``search``, the dropped stage kinds and (when benchmark is dropped) ``gates``."""
    out = copy.deepcopy({k: v for k, v in raw.items() if k != "search"})
    for item in overrides:
        apply_override(out, item, PipelineConfig, one_key=(StageEntry,))
    if drop:
        out["stages"] = [s for s in out["stages"] if next(iter(s)) not in drop]
        if "benchmark" in drop:
            out.pop("gates", None)
    return out


def validated(raw: dict, what: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = tuple(err["loc"])
        raise ConfigError(f"{what}: {format_path(loc)}: {message(err, loc, PipelineConfig)}") from None


def probe_raw(raw: dict) -> dict:
    """The same candidate, untrained: no training epochs, int8 without its accuracy fallback
    (the fastest int8 the candidate can give), fp32 kept when int8 is not faster."""
    out = copy.deepcopy(raw)
    for entry in out["stages"]:
        kind, body = next(iter(entry.items()))
        if kind in ("distill", "prune"):
            body["epochs"] = 0
        if kind == "quantize":
            if body.get("mode") == "qat":  # same int8 graph as static PTQ, without the training
                body["mode"] = "static"
                body.pop("qat", None)
            body.update(max_accuracy_drop=1.0, if_not_met="keep_fp32")
    return out


class TrialConsole(Console):
    """The trial's console: quiet, its lines appended to the trial's log.txt."""

    def __init__(self, log: Path):
        super().__init__(quiet=True, json_path=current().json_path)
        self.log_path = log

    def info(self, msg: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:  # a log: appended as it happens
            f.write(msg + "\n")


@dataclass
class RunOutcome:
    engine: Engine
    final: ModelArtifact
    teacher_onnx: ModelArtifact
    students: list[ModelArtifact]  # every non-teacher ONNX model the run published


def shared_engine(cfg: PipelineConfig, raw: dict, run_dir: Path, store: FolderStore, device: str,
                  log=print, on_epoch: Callable[[EpochMetrics], None] | None = None) -> Engine:
    """An engine whose shareable steps go through the search's ``store``, with the teacher's
    cached outputs shared by every trial (beside the store) instead of one copy per trial."""
    return Engine(cfg, raw, run_dir, device, resume=True, progress=False, log=log, stores=[store],
                  on_epoch=on_epoch, teacher_outputs=Path(store.root).parent / "cache" / "teacher")


def run_candidate(cfg: PipelineConfig, raw: dict, run_dir: Path, store: FolderStore, device: str,
                  on_epoch: Callable[[EpochMetrics], None] | None = None) -> RunOutcome:
    """Run one candidate's pipeline in ``run_dir`` (``shared_engine``), each training epoch
    handed to ``on_epoch``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    console = TrialConsole(run_dir / "log.txt")
    previous = current()
    use(console)
    try:
        engine = shared_engine(cfg, raw, run_dir, store, device, console.info, on_epoch)
        engine.run()
    finally:
        use(previous)
    final = engine.final_model
    if final is None or final.format != "onnx":
        raise ConfigError("search: a trial's stages must end in an ONNX model (add an export stage)")
    teacher = engine.published.get("teacher")
    if teacher is None or teacher.format != "onnx":
        raise ConfigError("search: the teacher has no ONNX model to measure the trials against")
    students = [m for n, m in engine.published.items() if n != "teacher" and m.format == "onnx"]
    if final.name not in {m.name for m in students}:
        students.append(final)
    return RunOutcome(engine, final, teacher, students)


def measure_val(out: RunOutcome, run_dir: Path, models: list[ModelArtifact],
                max_samples: int | None = None) -> list[ModelMeasurement]:
    """Latency (interleaved, as ``target:`` says) and ORT quality on the validation split."""
    from compress.bench.measure import benchmark_models
    from compress.config.stages import BenchmarkConfig

    eng = out.engine
    found = benchmark_models(models, eng.task, eng.data.val, BenchmarkConfig(max_samples=max_samples),
                             eng.cfg.target, run_dir / "val", run_dir)
    for m in found:
        m.split = "val"
    return found
