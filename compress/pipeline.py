"""The engine: runs the stages in order with a run dir, resume, atomic outputs, a lock and a report.

Each step writes into a fresh temp folder that replaces ``NN-kind/`` only when the step succeeds,
so a failed run never loses or half-overwrites what an earlier run produced.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compress.artifacts import ModelArtifact, StageResult, load_torch, save_torch
from compress.config import PipelineConfig
from compress.data.sources import load_data
from compress.errors import CompressError, GateError, InputError, StageError
from compress.models.build import build_model, load_checkpoint_, model_summary
from compress.report.render import write_reports
from compress.runtime.device import resolve_device, seed_everything
from compress.runtime.files import sha256_file, sha256_json, write_json, write_text
from compress.runtime.train import fit_
from compress.stages import stage_class
from compress.stages.base import BenchSettings, Stage, StageConfig, StageContext
from compress.stages.export import ExportConfig, export_checked


@dataclass
class StepRecord:
    name: str
    kind: str
    status: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("compress", "torch", "torch-pruning", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class RunLock:
    """One run per run dir: a second run into the same directory refuses instead of both writing."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--out {self.path.parent}: cannot create the run directory ({e})") from e
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        tmp = self.path.with_name(f".lock.{os.getpid()}")
        tmp.write_text(holder)
        try:
            return self._acquire(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def _acquire(self, tmp: Path) -> RunLock:
        for _ in range(2):
            try:
                os.link(tmp, self.path)  # atomic, and the lock is never seen half-written
            except FileExistsError:
                holder = self._holder()
                if holder and _alive(holder.get("pid", -1)) and holder.get("host") == socket.gethostname():
                    raise InputError(
                        f"{self.path.parent}: another compress run (pid {holder['pid']}) is writing "
                        "to this run directory; wait for it to finish or pass --out DIR"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            return self
        raise InputError(f"{self.path}: cannot take the run-directory lock")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


class TeacherStep(Stage):
    """Step 00: load or train the teacher, export its ONNX for the same-run comparison."""

    kind = "teacher"
    Config = StageConfig

    def __init__(self, pipeline: PipelineConfig, export: ExportConfig):
        self.pipeline, self.export = pipeline, export

    def run(self, model: ModelArtifact | None, ctx: StageContext) -> StageResult:
        tcfg, data = self.pipeline.teacher, ctx.data
        spec = tcfg.spec()
        net = build_model(spec, data.input_shape[0], data.num_classes, "teacher")
        metrics: dict[str, Any] = {}
        if tcfg.checkpoint:
            load_checkpoint_(net, tcfg.checkpoint, "teacher.checkpoint")
        else:
            fit = fit_(net, data.train, data.val, tcfg.train, data.batch_size, ctx.device,
                       augment_shift=data.augment_shift, seed=ctx.seed, desc="teacher", progress=ctx.progress)
            metrics.update(val_accuracy=fit.best_val_accuracy, best_epoch=fit.best_epoch, history=fit.history)
        net.cpu().eval()
        meta = {**model_summary(net, ctx.example()), "stage": "teacher"}
        art = save_torch(ModelArtifact("teacher", "torch", net, spec, meta=meta), ctx.stage_dir)
        x, _ = data.val_arrays()
        onnx_path = ctx.stage_dir / "model.onnx"
        metrics.update(export_checked(net, ctx.example(self.export.batch_size), onnx_path, self.export, x))
        metrics.update(params=meta["params"], macs=meta["macs"])
        return StageResult(art, metrics, publish=[ModelArtifact.from_onnx("teacher", onnx_path, **meta)])


class Engine:
    def __init__(self, cfg: PipelineConfig, raw: dict, run_dir: Path, device: str = "auto",
                 resume: bool = True, progress: bool = True, log=print):
        self.cfg, self.raw, self.run_dir = cfg, raw, run_dir
        self.device = resolve_device(device if device != "auto" else cfg.device)
        self.resume, self.progress, self.log = resume, progress, log
        self.records: list[StepRecord] = []
        self.config_sha = sha256_json(cfg.model_dump(mode="json"))

    def run(self) -> dict:
        with RunLock(self.run_dir):
            self._gates_checked = False
            try:
                return self._run()
            except CompressError:
                if not self._gates_checked:  # gate failures have written their own report
                    self._write_report(None, failed=True)
                raise

    def _run(self) -> dict:
        cfg = self.cfg
        seed_everything(cfg.seed)
        try:
            data = load_data(cfg.data, cfg.seed)
        except CompressError:
            raise
        except Exception as e:  # noqa: BLE001 - a user's data factory failed: name it, no traceback
            raise InputError(f"data: loading failed: {type(e).__name__}: {e}") from e
        self.data = data
        data_key = sha256_json({"data": cfg.data.model_dump(mode="json"), "files": _data_files(cfg)})
        stages = cfg.stage_list()
        export_cfg = next((c for k, c in stages if k == "export"), ExportConfig())
        bench_cfg = next((c for k, c in stages if k == "benchmark"), None)
        bench = BenchSettings(**{k: getattr(bench_cfg, k) for k in ("threads", "opt_level", "runs", "warmup")}) if bench_cfg else BenchSettings()
        published: dict[str, ModelArtifact] = {}
        base_key = {"seed": cfg.seed, "data": data_key, "device": self.device.type}

        teacher_key = sha256_json({**base_key, "teacher": cfg.teacher.model_dump(mode="json"),
                                   "ckpt": _file_sha(cfg.teacher.checkpoint),
                                   # only what shapes the teacher's ONNX file, not the parity limits
                                   "export": export_cfg.model_dump(include={"opset", "dynamic_batch", "batch_size", "exporter"})})
        teacher_step = TeacherStep(cfg, export_cfg)
        teacher = self._step(teacher_step, "00-teacher", "teacher", "teacher", None, teacher_key,
                             data, None, bench, published)
        current = teacher
        for i, (kind, scfg) in enumerate(stages, start=1):
            stage = stage_class(kind)(scfg)
            if current.format not in stage.accepts:
                raise StageError(
                    f"needs a {' or '.join(stage.accepts)} model, but the previous stage produced "
                    f"{current.format}; reorder the stages", f"{i:02d}-{kind}",
                )
            key = sha256_json({**base_key, "kind": kind, "config": scfg.model_dump(mode="json"),
                               "input": current.sha256, "teacher": teacher.sha256,
                               "published": {k: v.sha256 for k, v in published.items()},
                               "student": cfg.student.model_dump(mode="json") if cfg.student else None,
                               "student_ckpt": _file_sha(cfg.student.checkpoint) if cfg.student else None,
                               "bench": asdict(bench) if stage.uses_bench else None,
                               "extra": stage.key_extra()})
            current = self._step(stage, f"{i:02d}-{kind}", kind, f"stages[{i - 1}].{kind}", current,
                                 key, data, teacher, bench, published)
        report = self._write_report(current.name)
        write_text(self.run_dir / "config.resolved.yaml", yaml.safe_dump(self.raw, sort_keys=False))
        self._gates_checked = True
        if cfg.gates is not None:
            report["gates"] = check_gates(cfg.gates, report, self.run_dir)
            write_reports(report, self.run_dir)
            failed = [g for g in report["gates"] if not g["passed"]]
            if failed:
                raise GateError("; ".join(g["message"] for g in failed))
        return report

    # -- one step --------------------------------------------------------------------------

    def _step(self, stage: Stage, name: str, kind: str, where: str, model: ModelArtifact | None,
              key: str, data, teacher, bench, published) -> ModelArtifact:
        final_dir = self.run_dir / name
        record = _read_json(final_dir / "stage.json")
        if self.resume and record and record.get("status") == "done" and record.get("key") == key:
            loaded = self._load_outputs(record, final_dir, model)
            if loaded is not None:
                out, pubs = loaded
                for p in pubs:
                    published[p.name] = p
                self.records.append(StepRecord(name, kind, "skipped", 0.0, record.get("metrics", {})))
                self.log(f"[{name}] skipped (finished earlier, same config and inputs)")
                return out
        tmp_dir = self.run_dir / f".{name}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        ctx = StageContext(self.run_dir, tmp_dir, name, where, data, teacher, self.device, self.cfg.seed,
                           bench, dict(published), self.progress, self.cfg)
        self.log(f"[{name}] running")
        t0 = time.perf_counter()
        try:
            result = stage.run(model, ctx)
        except CompressError as e:
            self._fail(name, kind, t0, str(e), tmp_dir)
            if isinstance(e, StageError) and e.stage is None:
                raise StageError(str(e), name) from e
            raise
        except Exception as e:  # noqa: BLE001 - any other failure is a stage failure with its cause
            self._fail(name, kind, t0, f"{type(e).__name__}: {e}", tmp_dir)
            raise StageError(f"{type(e).__name__}: {e}", name) from e
        seconds = time.perf_counter() - t0
        _relocate(result, tmp_dir, final_dir)
        rec = {
            "name": name, "kind": kind, "status": "done", "key": key, "seconds": round(seconds, 3),
            "config": stage.cfg.model_dump(mode="json") if hasattr(stage, "cfg") else {},
            "input_sha256": model.sha256 if model else None,
            "output": _art_record(result.model, final_dir),
            "published": [_art_record(p, final_dir) for p in result.publish],
            "metrics": result.metrics, "device": str(self.device), "versions": versions(),
        }
        write_json(tmp_dir / "stage.json", rec)
        old = self.run_dir / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final_dir.exists():
            final_dir.rename(old)
        tmp_dir.rename(final_dir)
        shutil.rmtree(old, ignore_errors=True)
        for p in result.publish:
            published[p.name] = p
        self.records.append(StepRecord(name, kind, "done", seconds, result.metrics))
        self.log(f"[{name}] done in {seconds:.1f}s")
        return result.model

    def _fail(self, name: str, kind: str, t0: float, error: str, tmp_dir: Path) -> None:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        self.records.append(StepRecord(name, kind, "failed", time.perf_counter() - t0, error=error))

    def _load_outputs(self, record: dict, folder: Path, given: ModelArtifact | None):
        try:
            out = self._load_art(record["output"], folder, given)
            pubs = [self._load_art(p, folder, given) for p in record.get("published", [])]
        except (OSError, KeyError, ValueError, CompressError):
            return None
        if out is None or any(p is None for p in pubs):
            return None
        return out, pubs

    def _load_art(self, rec: dict, folder: Path, given: ModelArtifact | None) -> ModelArtifact | None:
        if rec["format"] == "passthrough":
            return given
        path = folder / rec["path"]
        if not path.exists() or sha256_file(path) != rec["sha256"]:
            return None
        if rec["format"] == "torch":
            art = load_torch(path.parent, self.data.input_shape[0], self.data.num_classes)
            return art
        return ModelArtifact(rec["name"], "onnx", path=path, sha256=rec["sha256"],
                             precision=rec.get("precision", "fp32"), meta=rec.get("meta", {}))

    # -- report ----------------------------------------------------------------------------

    def _write_report(self, final: str | None, failed: bool = False) -> dict:
        models = []
        for r in self.records:
            if r.kind == "benchmark" and r.status in ("done", "skipped"):
                models = r.metrics.get("models", [])
        previous = _read_json(self.run_dir / "report.json") if failed and not models else None
        if previous and previous.get("status") == "done":
            # a failed run keeps the last good run's measurements visible, marked as such
            models, final = previous.get("models", []), previous.get("final")
        report = {
            "pipeline": self.cfg.name,
            "config_sha256": self.config_sha,
            "device": str(self.device),
            "status": "failed" if failed else "done",
            "stages": [
                {"name": r.kind, "kind": r.kind, "dir": r.name,
                 "status": r.status, "seconds": round(r.seconds, 3), "metrics": r.metrics,
                 **({"error": r.error} if r.error else {})}
                for r in self.records
            ],
            **({"models_from": "previous successful run"} if previous and models else {}),
            "models": models,
            "final": final if any(m["name"] == final for m in models) else (models[-1]["name"] if models else final),
            "versions": versions(),
        }
        write_reports(report, self.run_dir)
        return report


def _relocate(result: StageResult, tmp_dir: Path, final_dir: Path) -> None:
    for art in [result.model, *result.publish]:
        if art.path is not None and tmp_dir in Path(art.path).parents:
            art.path = final_dir / Path(art.path).relative_to(tmp_dir)


def _art_record(art: ModelArtifact, folder: Path) -> dict:
    if art.path is None or folder not in Path(art.path).parents:
        # the stage passed its input on unchanged (e.g. benchmark): point at the earlier file
        return {"format": "passthrough", "name": art.name}
    return {"format": art.format, "name": art.name, "path": str(Path(art.path).relative_to(folder)),
            "sha256": art.sha256, "precision": art.precision, "meta": art.meta}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _file_sha(path: Path | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None


def _data_files(cfg: PipelineConfig) -> dict:
    out = {}
    for where, p in (("data", cfg.data.path), ("transfer", cfg.data.transfer and cfg.data.transfer.path)):
        if p and Path(p).is_file():
            out[where] = sha256_file(p)
        elif p and Path(p).is_dir():
            out[where] = sorted((str(f.relative_to(p)), f.stat().st_size, int(f.stat().st_mtime))
                                for f in Path(p).rglob("*") if f.is_file())
    return out


def check_gates(gates, report: dict, run_dir: Path) -> list[dict]:
    """Evaluate the config's gates on the final model; each entry says limit, value and verdict."""
    models = {m["name"]: m for m in report["models"]}
    final, teacher = models.get(report["final"]), models.get("teacher")
    if final is None:
        raise GateError("gates need a benchmark stage: no measured final model in this run")
    out = []

    def gate(name: str, value: float, limit: float, ok: bool, message: str) -> None:
        out.append({"gate": name, "value": value, "limit": limit, "passed": ok,
                    "message": message if not ok else ""})

    if gates.min_accuracy is not None:
        acc = final["accuracy"]
        gate("min_accuracy", acc, gates.min_accuracy, acc >= gates.min_accuracy,
             f"gates.min_accuracy: {final['name']} reached {acc:.4f}, below {gates.min_accuracy:g}")
    if gates.max_accuracy_drop is not None and teacher is not None:
        drop = teacher["accuracy"] - final["accuracy"]
        gate("max_accuracy_drop", drop, gates.max_accuracy_drop, drop <= gates.max_accuracy_drop,
             f"gates.max_accuracy_drop: {final['name']} is {drop:.4f} below the teacher, "
             f"over {gates.max_accuracy_drop:g}")
    if gates.latency_p50_ms_max is not None:
        p50 = final["latency_ms"]["p50"]
        gate("latency_p50_ms_max", p50, gates.latency_p50_ms_max, p50 <= gates.latency_p50_ms_max,
             f"gates.latency_p50_ms_max: {final['name']} p50 {p50:.4f} ms, over {gates.latency_p50_ms_max:g} ms")
    if gates.max_slowdown_vs_baseline is not None:
        from compress.bench.baseline import check_against_baseline

        # threads and opt_level come from the baseline file, so old and new are measured alike
        v = check_against_baseline(run_dir / final["path"], gates.baseline, gates.max_slowdown_vs_baseline)
        gate("max_slowdown_vs_baseline", v.ratio, 1 + gates.max_slowdown_vs_baseline,
             not v.failed(), f"gates.max_slowdown_vs_baseline: {v.message}")
        out[-1].update(verdict=v.verdict, ci=[v.ci_low, v.ci_high],
                       fingerprint_mismatch=v.fingerprint_mismatch)
    return out
