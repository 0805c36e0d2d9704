"""The engine's loop: for each step, a resume key, a run (or a skip), an atomic swap, a record.

Each step writes into a fresh temp folder that replaces ``NN-kind/`` only when the step succeeds,
so a failed run never loses or half-overwrites what an earlier run produced. Each step also gets
a persistent work folder named by its resume key (``.work/KEY``) for mid-stage checkpoints, and
its own seed derived from the run's seed and its name, so a resumed run gives what an
uninterrupted one gives.

Under torch.distributed every rank runs this loop: rank 0 takes the run lock, runs every stage and
writes every file; the other ranks run only the stages that train (their DDP peers), in private
scratch folders, and then load what rank 0 wrote. Each stage context carries a training scope (the
stages hand it to fit_): where to checkpoint and how to key the teacher-output cache.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from compress.artifacts import ModelArtifact, ModelMeasurement
from compress.common.console import current
from compress.common.device import resolve_device, seed_everything, stage_seed
from compress.common.files import sha256_file, sha256_json, write_text
from compress.config.data import data_fingerprint
from compress.config.pipeline import PipelineConfig, TeacherStageConfig, export_key
from compress.config.stages import ExportConfig
from compress.data.sources import load_data_guarded
from compress.engine.lock import RunLock
from compress.engine.stage_folder import StageFolder, swap_in
from compress.engine.step_cache import StepStore, finished, teacher_cache
from compress.errors import CompressError, GateError, StageError, Terminated
from compress.export.teacher_io import teacher_classes
from compress.gates import check_gates
from compress.records import Failure, RunReport
from compress.report.assemble import StepRecord, assemble
from compress.report.render import write_reports
from compress.stages import stage_class
from compress.stages.base import Stage, StageContext
from compress.tasks import make_task
from compress.train import distributed as dist
from compress.train.checkpoint import EpochMetrics, TrainingScope

DISTILLED = "student-distilled"  # the distilled student before pruning, as the benchmark measures it
INTERRUPTED = "interrupted (Ctrl-C); finished stages are kept: run the same command to resume"
TERMINATED = "terminated (SIGTERM); finished stages are kept: run the same command to resume"


@dataclass
class Step:
    name: str  # the step's folder, e.g. "02-prune"
    kind: str
    where: str  # its YAML path, for messages
    stage: Stage
    key_parts: dict


class Engine:
    """One run of a pipeline. Others hook in instead of subclassing it: ``stores`` (finished
    steps kept outside the run folder), ``on_epoch`` (each training epoch's validation metrics)
    and ``teacher_outputs``; after ``run`` it holds ``final_model``, ``published`` (the models
    the steps published, by name) and ``ran`` (the steps it ran rather than reused)."""

    def __init__(self, cfg: PipelineConfig, raw: dict, run_dir: Path, device: str = "auto",
                 resume: bool = True, progress: bool = True, log=print,
                 cache_dir: Path | None | bool = None, *, stores: Sequence[StepStore] = (),
                 on_epoch: Callable[[EpochMetrics], None] | None = None,
                 teacher_outputs: Path | None = None):
        """``cache_dir``: where finished teacher steps are shared between run directories
        (None: ``$COMPRESS_CACHE`` or ``~/.cache/compress``; False: no cache). ``stores``: more
        step stores, asked first. ``teacher_outputs``: where the training loops keep the
        teacher's outputs (default ``RUN_DIR/.cache/teacher``)."""
        self.cfg, self.raw, self.run_dir = cfg, raw, run_dir
        self.stores = [*stores, *([] if cache_dir is False else [teacher_cache(cache_dir or None)])]
        self.on_epoch, self.teacher_outputs = on_epoch, teacher_outputs
        self.device = dist.init_from_env(resolve_device(device if device != "auto" else cfg.device))
        self.world = dist.world()
        self.resume, self.progress, self.log = resume, progress, log
        self.records: list[StepRecord] = []
        self.measurements: list[ModelMeasurement] = []
        self.config_sha = sha256_json(cfg.model_dump(mode="json"))
        self.export = next((c for k, c in cfg.stage_list() if k == "export"), None)
        self.final_model: ModelArtifact | None = None
        self.published: dict[str, ModelArtifact] = {}
        self.ran: list[str] = []

    def run(self) -> RunReport | None:
        main = self.world.main
        with RunLock(self.run_dir) if main else contextlib.nullcontext():
            self._gates_checked = False
            try:
                return self._run()
            except KeyboardInterrupt as e:
                if main:
                    self._report(None, failed=True, failure=_stopped(e))
                raise
            except CompressError as e:
                if main and not self._gates_checked:  # gate failures have written their own report
                    self._report(None, failed=True, failure={"reason": "error", "message": str(e)})
                raise

    def _run(self) -> RunReport | None:
        cfg = self.cfg
        self.task = make_task(cfg.task)
        self.data = load_data_guarded(cfg.data, cfg.seed, teacher_classes(cfg))
        self.data_key = sha256_json({"seed": cfg.seed, "data": cfg.data.model_dump(mode="json"),
                                     "files": data_fingerprint(cfg.data)})
        published = self.published
        teacher = model = self._step(self._teacher_step(), None, None, published)
        kinds = [k for k, _ in cfg.stage_list()]
        for i, (kind, scfg) in enumerate(cfg.stage_list(), start=1):
            stage = stage_class(kind)(scfg)
            step = Step(f"{i:02d}-{kind}", kind, f"stages[{i - 1}].{kind}", stage, {
                "config": scfg.model_dump(mode="json"), "input": model.sha256,
                "teacher": teacher.sha256, "published": {k: v.sha256 for k, v in published.items()},
                "student": cfg.student.model_dump(mode="json") if cfg.student else None,
                "student_ckpt": _file_sha(cfg.student.checkpoint) if cfg.student else None,
                "target": cfg.target.model_dump(mode="json") if stage.uses_target else None,
                "extra": stage.key_extra(cfg.target)})
            if model.format not in scfg.takes():
                raise StageError(f"needs a {' or '.join(scfg.takes())} model, but the previous stage "
                                 f"produced {model.format}; reorder the stages", step.name)
            model = self._step(step, model, teacher, published)
            if kind == "distill" and "prune" in kinds[i:] and model.format == "torch":
                # measured in ORT beside the pruned student: what pruning bought
                published[DISTILLED] = replace(model, name=DISTILLED,
                                               meta={**model.meta, "stage": step.name})
        self.final_model = model
        if not self.world.main:
            return None  # rank 0 writes the report
        report = self._report(model.name)
        current().event("final_models", final=report.final, models=[m.as_dict() for m in report.models])
        write_text(self.run_dir / "config.resolved.yaml", yaml.safe_dump(self.raw, sort_keys=False))
        self._gates_checked = True
        if cfg.gates is not None:
            gates = check_gates(cfg.gates, self.measurements, report.final, self.run_dir)
            report.gates = gates
            failed = [g for g in gates if not g.passed]
            if failed:  # the run produced its models, but the final one fails a gate: say so
                message = "; ".join(g.message for g in failed)
                report.status, report.failure = "failed", Failure(reason="gate", message=message)
            write_reports(report, self.run_dir)
            if failed:
                raise GateError(message)
        return report

    def _teacher_step(self) -> Step:
        cfg = self.cfg
        export = self.export or ExportConfig()
        stage = stage_class("teacher")(TeacherStageConfig(teacher=cfg.teacher, export=export))
        extra = stage.key_extra(cfg.target)  # optimum's baseline: this CPU's preset, optimum there
        return Step("00-teacher", "teacher", "teacher", stage, {
            "teacher": cfg.teacher.model_dump(mode="json"), "ckpt": _file_sha(cfg.teacher.checkpoint),
            "onnx": _file_sha(cfg.teacher.onnx), "export": export_key(export),
            "onnx_data": _external_shas(cfg.teacher.onnx), **({"extra": extra} if extra else {})})

    # -- one step --------------------------------------------------------------------------

    def _key(self, step: Step) -> str:
        return sha256_json({"seed": self.cfg.seed, "data": self.data_key, "device": self.device.type,
                            "task": self.cfg.task, "kind": step.kind, **step.key_parts})

    def _step(self, step: Step, model: ModelArtifact | None, teacher: ModelArtifact | None,
              published: dict[str, ModelArtifact]) -> ModelArtifact:
        key, folder = self._key(step), StageFolder(self.run_dir, step.name)
        out = self._resumed(step, key, folder, model, published) if self.world.main else None
        if dist.broadcast(out is not None):  # every rank follows rank 0's decision
            return out if self.world.main else self._follow(step, folder, model, published)
        if not self.world.main:
            return self._peer(step, key, model, teacher, published, folder)
        tmp_dir = folder.fresh_tmp()
        ctx = self._context(step, key, tmp_dir, teacher, published)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"[{step.name}] running")
        current().event("stage_start", stage=step.name, kind=step.kind)
        t0 = time.perf_counter()
        try:
            result = step.stage.run(model, ctx)
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM: the step's checkpoints (ctx.work_dir) stay
            self._failed(step, tmp_dir, t0, _stopped(e)["message"])
            raise
        except Exception as e:
            error = str(e) if isinstance(e, CompressError) else f"{type(e).__name__}: {e}"
            self._failed(step, tmp_dir, t0, error)
            if isinstance(e, StageError) and e.stage is None:
                raise StageError(str(e), step.name) from e
            if isinstance(e, CompressError):
                raise
            raise StageError(error, step.name) from e
        seconds = time.perf_counter() - t0
        folder.commit(result, {"name": step.name, "kind": step.kind, "key": key,
                               "seconds": round(seconds, 3), "device": str(self.device),
                               "config": step.stage.cfg.model_dump(mode="json")}, model)
        shutil.rmtree(ctx.work_dir, ignore_errors=True)  # checkpoints are for crash recovery only
        self._put(step, key, folder.final)
        self.ran.append(step.name)
        dist.barrier()  # the peers may now load what this step wrote
        published.update({p.name: p for p in result.publish})
        self._measured(result.measurements)
        self.records.append(StepRecord(step.name, step.kind, "done", seconds, result.metrics))
        self.log(f"[{step.name}] done in {seconds:.1f}s")
        current().event("stage_end", stage=step.name, kind=step.kind, status="done", seconds=seconds)
        return result.model

    def _failed(self, step: Step, tmp_dir: Path, t0: float, error: str) -> None:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        self.records.append(StepRecord(step.name, step.kind, "failed", time.perf_counter() - t0, error=error))
        current().event("stage_end", stage=step.name, kind=step.kind, status="failed", error=error)

    def _resumed(self, step: Step, key: str, folder: StageFolder, model: ModelArtifact | None,
                 published: dict[str, ModelArtifact]) -> ModelArtifact | None:
        """The step's outputs when a finished record matches its key (resume: the run folder
        first, then each step store that serves the step's kind), else None."""
        cached = None
        if self.resume and not finished(folder.final, key):
            cached = self._fetch(step, key, folder)
        found = folder.resume(key, model, self.data.info) if self.resume else None
        if found is None:
            return None
        record, out, pubs = found.record, found.model, found.published
        published.update({p.name: p for p in pubs})
        self._measured(record.measurements)
        seconds = record.seconds  # what the step took when it ran
        self.records.append(StepRecord(step.name, step.kind, "skipped", seconds, record.metrics))
        same = "teacher" if step.kind == "teacher" else "config, inputs, teacher"
        self.log(f"[{step.name}] reused from {cached} (same {same}, data, seed and device; it took "
                 f"{seconds:.1f}s)" if cached else
                 f"[{step.name}] skipped (finished earlier, same config and inputs)")
        current().event("stage_end", stage=step.name, kind=step.kind, status="skipped")
        return out

    def _fetch(self, step: Step, key: str, folder: StageFolder) -> str | None:
        """Swap a stored copy of a finished step into the run folder: where it came from (for
        the log), or None when no store serving the step's kind holds it."""
        for store in self.stores:
            if not store.serves(step.kind):
                continue
            tmp = folder.fresh_tmp()
            try:
                found = store.fetch(step.name, key, tmp)
            except OSError as e:
                self.log(f"[{step.name}] stored copy {store.where(step.name, key)} unreadable ({e}); "
                         "running it")
                found = False
            if found:
                swap_in(tmp, folder.final)
                return f"{store.label} {store.where(step.name, key)}"
            shutil.rmtree(tmp, ignore_errors=True)
        return None

    def _put(self, step: Step, key: str, final: Path) -> None:
        for store in self.stores:
            if not store.serves(step.kind):
                continue
            try:
                store.put(step.name, key, final)
            except OSError as e:  # the run stands without it: say so and go on
                self.log(f"[{final.name}] not kept in {store.where(step.name, key)} ({e})")

    def _context(self, step: Step, key: str, stage_dir: Path, teacher: ModelArtifact | None,
                 published: dict[str, ModelArtifact]) -> StageContext:
        seed = stage_seed(self.cfg.seed, step.name)
        seed_everything(seed)  # each stage's randomness is its own, whatever ran before it
        ctx = StageContext(
            run_dir=self.run_dir, stage_dir=stage_dir, work_dir=self.run_dir / ".work" / key[:16],
            stage_name=step.name, where=step.where, task=self.task, data=self.data, teacher=teacher,
            student=self.cfg.student, device=self.device, seed=seed, target=self.cfg.target,
            export=self.export, published=dict(published), measurements=list(self.measurements),
            config_sha256=self.config_sha, progress=self.progress and self.world.main)
        ctx.scope = self._scope(ctx, step, key)
        return ctx

    def _scope(self, ctx: StageContext, step: Step, key: str) -> TrainingScope:
        t, hook = ctx.teacher, self.on_epoch
        on_epoch = None
        if hook is not None and self.world.main:  # the epochs of rank 0 stand for the run's
            def on_epoch(m: EpochMetrics) -> None:
                hook(replace(m, stage=step.name, kind=step.kind))
        return TrainingScope(work_dir=ctx.work_dir, key=key,
                             cache_dir=self.teacher_outputs or self.run_dir / ".cache" / "teacher",
                             teacher=t.module if t else None, teacher_sha256=t.sha256 if t else None,
                             data_key=self.data_key, resume=self.resume, on_epoch=on_epoch)

    def _peer(self, step: Step, key: str, model: ModelArtifact | None, teacher: ModelArtifact | None,
              published: dict[str, ModelArtifact], folder: StageFolder) -> ModelArtifact:
        """A rank other than 0: train beside rank 0 (in a private scratch folder) when the stage
        trains, then load what rank 0 wrote."""
        if step.stage.trains():
            scratch = Path(tempfile.mkdtemp(prefix=f"compress-rank{self.world.rank}-"))
            try:
                ctx = self._context(step, key, scratch, teacher, published)
                step.stage.run(model, ctx)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        dist.barrier()
        return self._follow(step, folder, model, published)

    def _follow(self, step: Step, folder: StageFolder, model: ModelArtifact | None,
                published: dict[str, ModelArtifact]) -> ModelArtifact:
        loaded = folder.load(folder.record(), model, self.data.info)
        if loaded is None:
            raise StageError(f"rank {self.world.rank}: cannot load what rank 0 wrote to "
                             f"{folder.final}", step.name)
        published.update({p.name: p for p in loaded[1]})
        return loaded[0]

    def _measured(self, new: list[ModelMeasurement]) -> None:
        names = {m.name for m in new}
        self.measurements = [m for m in self.measurements if m.name not in names] + new

    def _report(self, final: str | None, failed: bool = False, failure: dict | None = None) -> RunReport:
        """Assemble and write the reports; a failed run says why in ``failure`` (``reason``:
        error, gate or interrupted; ``message``)."""
        report = assemble(self.cfg.name, self.config_sha, str(self.device), self.records,
                          self.measurements, final, failed, self.run_dir)
        if failure is not None:
            report.failure = Failure(**failure)
        data = getattr(self, "data", None)  # the text corpus: each source's licence and counts
        if data is not None and isinstance(data.info.preprocessing.get("corpus"), dict):
            report.corpus = data.info.preprocessing["corpus"]
        write_reports(report, self.run_dir)
        return report


def _stopped(e: KeyboardInterrupt) -> dict:
    """The report's failure for a run stopped by Ctrl-C or by SIGTERM (``Terminated``)."""
    if isinstance(e, Terminated):
        return {"reason": "terminated", "message": TERMINATED}
    return {"reason": "interrupted", "message": INTERRUPTED}


def _external_shas(onnx: Path | None) -> dict[str, str | None]:
    """The hashes of an onnx teacher's external data files, by name."""
    if onnx is None or not Path(onnx).is_file():
        return {}
    from compress.export.teacher_io import external_files

    return {p.name: _file_sha(p) for p in external_files(onnx)}


def _file_sha(path: Path | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None
