"""Quantize to int8: static or dynamic PTQ in ONNX Runtime, or QAT in PyTorch (torchao PT2E).

Every int8 model is measured against its fp32 input in the same run: ORT accuracy, top-1
agreement and interleaved latency. When int8 loses too much accuracy the most sensitive layers
stay in float; when int8 is not faster the fp32 model is kept, and the metrics say so.
The ONNX Runtime helpers live in compress/runtime/ort_quant.py.
"""

from __future__ import annotations

import copy
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from compress.artifacts import ModelArtifact, StageResult
from compress.errors import ConfigError, GateError
from compress.runtime import qat_quantizer as qatq
from compress.runtime.files import atomic_write
from compress.runtime.onnx_export import export_onnx, strip_debug_metadata_
from compress.runtime.ort_quant import (
    FUSED_OPS,
    TARGETS,
    Target,
    class_feeds,
    count_ops,
    detect_target,
    fused_ops,
    input_spec,
    mean_cosine,
    modules_of,
    preprocess,
    quantize_dynamic_onnx,
    quantize_static_onnx,
    rank_sensitive_nodes,
    run_outputs,
)
from compress.runtime.train import KD, TrainConfig, fit_
from compress.stages.base import Stage, StageConfig, StageContext


class QATConfig(TrainConfig):
    """Fake-quant fine-tuning; the loss is KD from the teacher when the pipeline has one."""

    epochs: int = Field(3, ge=1, le=10000)
    lr: float = Field(5e-4, gt=0, le=10)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    temperature: float = Field(4.0, gt=0, le=100, description="KD softmax temperature.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the soft KD loss vs the labels.")
    opset: int = Field(18, ge=13, le=23, description="Opset of the exported QDQ ONNX.")
    batch_size_onnx: int = Field(1, gt=0, le=4096, description="Fixed batch of the exported ONNX.")
    fold_bn: bool = Field(True, description="Fold batch norm into convs before QAT (frozen stats); "
                          "false trains it too and converts much slower.")


class QuantizeConfig(StageConfig):
    mode: Literal["static", "dynamic", "qat"] = Field(
        "static", description="static: PTQ with calibration (CNNs); dynamic: weights only, "
        "activations at run time (transformers, RNNs); qat: fake-quant training in PyTorch."
    )
    target: Literal["auto", "x86-vnni", "x86-avx2", "arm64"] = Field(
        "auto", description="CPU family the int8 types are chosen for; auto reads /proc/cpuinfo."
    )
    per_channel: bool = Field(True, description="Per-channel weight scales (per-tensor loses accuracy).")
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(
        256, ge=1, le=100_000, description="Training-split inputs used to calibrate (never validation)."
    )
    max_accuracy_drop: float = Field(
        0.005, ge=0, le=1, description="Largest ORT top-1 drop vs fp32, as a fraction like every "
        "accuracy in the report and gates.max_accuracy_drop (0.005 = half a percentage point)."
    )
    min_cosine: float = Field(
        0.98, ge=0, le=1, description="Models without labels (dynamic): least mean output cosine."
    )
    max_float_layers: int = Field(
        8, ge=0, le=1000, description="Fallback: at most this many sensitive tensors kept in float "
        "(each with the nodes that make and read it)."
    )
    min_speedup: float = Field(
        1.05, gt=0, le=100, description="int8 is kept only if fp32 p50 / int8 p50 reaches this."
    )
    if_not_met: Literal["fail", "keep_fp32"] = Field(
        "fail", description="No int8 model meets max_accuracy_drop: fail (exit 3) or keep fp32."
    )
    exclude: list[str] = Field(default_factory=list, description="ONNX node names kept in float.")
    op_types: list[str] | None = Field(None, description="ONNX op types to quantize (default: all).")
    qat: QATConfig | None = Field(None, description="Training settings for mode: qat.")

    @model_validator(mode="after")
    def _qat_section(self):
        if self.qat is not None and self.mode != "qat":
            raise ValueError(f"'qat' settings apply to mode: qat only (mode is {self.mode})")
        if self.mode == "qat" and self.qat is None:
            self.qat = QATConfig()
        return self


def quantize_onnx(src: Path, dst: Path, cfg: QuantizeConfig, target: Target, exclude: list[str],
                  calib: np.ndarray | None = None) -> Path:
    """Quantize a pre-processed ONNX model as ``cfg.mode`` says (static needs ``calib``).

    Args:
        exclude: ONNX node names kept in float.
        calib: training-split inputs for static calibration.
    """
    if cfg.mode == "static":
        return quantize_static_onnx(src, dst, calib, target, exclude, per_channel=cfg.per_channel,
                                    calibrate_method=cfg.calibrate_method, op_types=cfg.op_types)
    return quantize_dynamic_onnx(src, dst, target, exclude, per_channel=cfg.per_channel,
                                 op_types=cfg.op_types)


# -- judging a candidate against its fp32 input -------------------------------------------------


@dataclass
class Trial:
    path: Path
    excluded: list[str]
    accuracy: float | None
    agreement: float
    cosine: float
    fp32_p50: float
    p50: float

    @property
    def speedup(self) -> float:
        return self.fp32_p50 / self.p50

    def row(self) -> dict:
        return {"float_layers": self.excluded, "accuracy": self.accuracy, "top1_agreement": self.agreement,
                "cosine": round(self.cosine, 5), "p50_ms": round(self.p50, 5),
                "fp32_p50_ms": round(self.fp32_p50, 5), "speedup": round(self.speedup, 3)}


class Judge:
    """Measures candidates against the fp32 model: ORT accuracy (classifiers on the validation
    split), top-1 agreement, output cosine, and p50 latency interleaved with fp32."""

    def __init__(self, fp32: Path, ctx: StageContext, cfg: QuantizeConfig):
        from compress.bench.latency import make_session, ort_accuracy, random_feeds

        self.fp32, self.ctx, self.cfg = fp32, ctx, cfg
        x, y = ctx.data.val_arrays()
        _, _, dims = input_spec(fp32)
        self.labeled = dims[1:] == list(ctx.data.input_shape)
        if self.labeled:
            self.feeds = class_feeds(fp32, x)
            self.x, self.y = x, y
            self.fp32_accuracy: float | None = ort_accuracy(fp32, x, y, self._level)
            self.timing_feed = {k: v[: max(1, input_spec(fp32)[1] or 1)] for k, v in self.feeds[0].items()}
        else:
            sess = make_session(fp32, 1, "basic")
            self.feeds = [random_feeds(sess, seed=i) for i in range(8)]
            self.fp32_accuracy = None
            self.timing_feed = self.feeds[0]
        self.ref = run_outputs(fp32, self.feeds, self._level)

    @property
    def _level(self) -> str:
        return self.ctx.bench.opt_level

    def trial(self, path: Path, excluded: list[str]) -> Trial:
        from compress.bench.latency import measure_interleaved, ort_accuracy

        out = run_outputs(path, self.feeds, self._level)
        agree = float((out.argmax(-1) == self.ref.argmax(-1)).mean())
        acc = ort_accuracy(path, self.x, self.y, self._level) if self.labeled else None
        b = self.ctx.bench
        fp32_m, m = measure_interleaved([self.fp32, path], [self.timing_feed] * 2, b.threads, self._level,
                                        b.runs, b.warmup)
        return Trial(path, list(excluded), acc, agree, mean_cosine(self.ref, out), fp32_m.stats.p50,
                     m.stats.p50)

    def drop(self, t: Trial) -> float:
        """ORT top-1 accuracy lost vs fp32, as a fraction (0 for models without labels)."""
        return self.fp32_accuracy - t.accuracy if self.labeled else 0.0

    def accurate(self, t: Trial) -> bool:
        if self.labeled:
            return self.drop(t) <= self.cfg.max_accuracy_drop + 1e-9
        return t.cosine >= self.cfg.min_cosine

    def better(self, a: Trial, b: Trial | None) -> bool:
        """Best so far: the most accurate, then the fastest."""
        if b is None:
            return True
        qa, qb = (a.accuracy, b.accuracy) if self.labeled else (a.cosine, b.cosine)
        return (qa, -a.p50) > (qb, -b.p50)


# -- the stage ----------------------------------------------------------------------------------


class QuantizeStage(Stage):
    kind = "quantize"
    Config = QuantizeConfig
    accepts = ("onnx", "torch")
    uses_bench = True  # keep-int8 decisions are measured with the benchmark settings

    def key_extra(self) -> dict:
        # target: auto resolves from this CPU's flags, so a run dir moved to another CPU re-runs
        return {"target": detect_target()[0] if self.cfg.target == "auto" else self.cfg.target}

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: QuantizeConfig = self.cfg
        self.ranking: list[dict] = []
        want = "torch" if cfg.mode == "qat" else "onnx"
        if model.format != want:
            place = "before the export stage" if want == "torch" else "after an export stage"
            raise ConfigError(f"{ctx.where}.mode: {cfg.mode} quantization needs a {want} model (put "
                              f"this stage {place}); the previous stage produced a {model.format} model")
        if ctx.bench.opt_level in ("disable", "basic"):
            raise ConfigError(f"{ctx.where}: benchmark opt_level {ctx.bench.opt_level!r} leaves QDQ int8 "
                              "models unfused and slower than fp32; use 'extended' or 'all'")
        name, evidence = detect_target() if cfg.target == "auto" else (cfg.target, "configured")
        target = TARGETS[name]
        metrics: dict = {"mode": cfg.mode, "target": name, "target_evidence": evidence,
                         "activation_type": target.activation, "weight_type": target.weight,
                         "reduce_range": target.reduce_range, "per_channel": cfg.per_channel,
                         "target_note": target.why}
        publish: list[ModelArtifact] = []
        meta = {**model.meta, "stage": ctx.stage_name}
        if cfg.mode == "qat":
            fp32_path, int8_path, metrics["qat"] = self._qat(model, ctx, target)
            fp32_art = ModelArtifact.from_onnx(model.name, fp32_path, "fp32", **meta)
            publish.append(fp32_art)
        else:
            fp32_path, fp32_art, int8_path = model.path, model, None
        judge = Judge(fp32_path, ctx, cfg)
        best, trials = self._search(judge, fp32_path, int8_path, ctx, cfg, target)
        final = ctx.stage_dir / "model.int8.onnx"
        if best.path != final:
            best.path.replace(final)
            best.path = final
        _strip_debug_metadata(final)
        precision = "mixed" if best.excluded else "int8"
        int8_art = ModelArtifact.from_onnx(f"{model.name}-int8", final, precision, **meta)
        publish.append(int8_art)
        for extra in ctx.stage_dir.glob("trial-*.onnx"):
            extra.unlink()

        kept, reason = "int8", f"{best.speedup:.2f}x faster than fp32 at p50"
        machine = {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine().lower(), platform.machine().lower())
        on_target = machine == target.arch  # speed is only judged on the CPU the target describes
        if not judge.accurate(best):
            limit = (f"best drop {judge.drop(best) * 100:.2f} points, limit {cfg.max_accuracy_drop * 100:g} "
                     "points; " if judge.labeled else "")
            kept, reason = "fp32", f"no int8 model met the accuracy limit ({limit}if_not_met: keep_fp32)"
        elif best.speedup < cfg.min_speedup and on_target:
            kept, reason = "fp32", (f"int8 is not faster: {best.speedup:.2f}x at p50 "
                                    f"(min_speedup {cfg.min_speedup:g}); per-call overhead dominates")
        elif not on_target:
            reason = f"latency measured on {platform.machine()}, not on the {name} target: verify there"
        metrics.update(self._report(judge, best, trials, fp32_path, final, precision, kept, reason, ctx))
        metrics["report_md"] += (
            f"\nTarget **{name}** ({evidence}): {target.activation} activations, {target.weight} "
            f"weights, reduce_range {'on' if target.reduce_range else 'off'}; {target.why}.")
        out = int8_art if kept == "int8" else fp32_art
        return StageResult(out, metrics, publish=publish)

    def _search(self, judge: Judge, fp32_path: Path, int8_path: Path | None, ctx: StageContext,
                cfg: QuantizeConfig, target: Target) -> tuple[Trial, list[Trial]]:
        """Quantize, then keep the most sensitive layers in float until the accuracy limit holds."""
        if int8_path is not None:  # qat: the trained model is the one candidate
            trials = [judge.trial(int8_path, [])]
            return self._settle(judge, trials[0], trials, cfg, ctx)
        calib = ctx.data.calibration(cfg.calibration_samples, seed=ctx.seed) if judge.labeled else None
        src = preprocess(fp32_path, ctx.stage_dir / "trial-pre.onnx")

        def make(excluded: list[str], k: int) -> Path:
            return quantize_onnx(src, ctx.stage_dir / f"trial-{k}.onnx", cfg, target, excluded, calib)

        if cfg.mode == "static" and calib is None:
            raise ConfigError(f"{ctx.where}.mode: static calibration needs inputs shaped like the "
                              f"data {list(ctx.data.input_shape)}; use mode: dynamic for this model")
        excluded = list(cfg.exclude)
        first = judge.trial(make(excluded, 0), excluded)
        trials, best = [first], first
        if judge.accurate(first) or cfg.max_float_layers == 0 or cfg.mode != "static":
            return self._settle(judge, best, trials, cfg, ctx)
        ranking = rank_sensitive_nodes(src, first.path, calib[:64])
        for group in ranking:
            if len(trials) > cfg.max_float_layers:
                break
            if all(n in excluded for n in group["nodes"]):
                continue
            excluded += [n for n in group["nodes"] if n not in excluded]
            t = judge.trial(make(excluded, len(trials)), excluded)
            trials.append(t)
            if judge.better(t, best) or judge.accurate(t):
                best = t
            if judge.accurate(t):
                break
        self.ranking = ranking[: max(cfg.max_float_layers, 2)]
        return self._settle(judge, best, trials, cfg, ctx)

    def _settle(self, judge: Judge, best: Trial, trials: list[Trial], cfg: QuantizeConfig,
                ctx: StageContext) -> tuple[Trial, list[Trial]]:
        if judge.accurate(best) or cfg.if_not_met == "keep_fp32":
            return best, trials
        if judge.labeled:
            got = (f"best {best.accuracy * 100:.2f}% vs fp32 {judge.fp32_accuracy * 100:.2f}% "
                   f"({judge.drop(best) * 100:.2f} points, limit {cfg.max_accuracy_drop * 100:g} points)")
        else:
            got = f"best mean cosine {best.cosine:.4f} (min_cosine {cfg.min_cosine:g})"
        floats = ", ".join(best.excluded) or "none"
        raise GateError(f"{ctx.where}: int8 accuracy limit not met: {got}, with {len(best.excluded)} "
                        f"layer(s) in float ({floats}), p50 {best.p50:.4f} ms vs fp32 {best.fp32_p50:.4f} ms")

    def _qat(self, model: ModelArtifact, ctx: StageContext, target: Target) -> tuple[Path, Path, dict]:
        q: QATConfig = self.cfg.qat
        example = ctx.example(q.batch_size_onnx)
        fp32_path = export_onnx(model.module, example, ctx.stage_dir / "model.fp32.onnx", q.opset)
        scheme = qatq.QATScheme("int8" if target.activation == "QInt8" else "uint8",
                                7 if target.reduce_range else 8)
        trace = torch.from_numpy(ctx.data.calibration(4, seed=ctx.seed))
        prepared = qatq.prepare_qat(copy.deepcopy(model.module).cpu(), trace, scheme, q.fold_bn)
        teacher = ctx.teacher.module if ctx.teacher is not None else None
        train_cfg = TrainConfig.of(q)
        fit = fit_(prepared, ctx.data.train, ctx.data.val, train_cfg, ctx.data.batch_size,
                   ctx.device, teacher=teacher, kd=KD(q.temperature, q.alpha),
                   augment_shift=ctx.data.augment_shift, seed=ctx.seed, desc="qat", progress=ctx.progress)
        converted = qatq.convert_qat(prepared)
        int8_path = qatq.export_qdq_onnx(converted, example, ctx.stage_dir / "trial-qat.onnx", q.opset)
        return fp32_path, int8_path, {"val_accuracy_fake_quant": fit.best_val_accuracy,
                                      "best_epoch": fit.best_epoch, "kd": teacher is not None,
                                      "history": fit.history}

    def _report(self, judge: Judge, best: Trial, trials: list[Trial], fp32: Path, int8: Path,
                precision: str, kept: str, reason: str, ctx: StageContext) -> dict:
        ops = fused_ops(int8, judge._level)
        fused = {k: ops[k] for k in FUSED_OPS if k in ops}
        convs = count_ops(fp32, "Conv")
        m = {
            "fp32": {"bytes": fp32.stat().st_size, "accuracy": judge.fp32_accuracy,
                     "p50_ms": round(best.fp32_p50, 5)},
            "int8": {**best.row(), "bytes": int8.stat().st_size, "precision": precision},
            "fused_ops": fused, "conv_count": convs, "ort_ops": ops,
            "float_layers": best.excluded, "float_modules": modules_of(fp32, best.excluded),
            "trials": [t.row() for t in trials],
            "sensitivity": self.ranking,
            "kept": kept, "reason": reason, "threads": ctx.bench.threads, "opt_level": judge._level,
            "calibration": {"method": self.cfg.calibrate_method, "samples": self.cfg.calibration_samples,
                            "split": "train"} if self.cfg.mode == "static" else None,
        }

        def acc(a: float | None) -> str:
            return f"{a * 100:.2f}%" if a is not None else "-"

        lines = [
            "| model | precision | size | ORT accuracy | top-1 agreement | cosine | p50 ms | speedup |",
            "|---|---|---|---|---|---|---|---|",
            f"| fp32 | fp32 | {fp32.stat().st_size / 1e3:.1f} kB | {acc(judge.fp32_accuracy)} | 100% | 1 "
            f"| {best.fp32_p50:.4f} | 1.00x |",
            f"| int8 | {precision} | {int8.stat().st_size / 1e3:.1f} kB | {acc(best.accuracy)} "
            f"| {best.agreement * 100:.1f}% | {best.cosine:.4f} | {best.p50:.4f} | {best.speedup:.2f}x |",
            "",
            f"Mode **{self.cfg.mode}**; fused ops in ORT: "
            + (", ".join(f"{k} {v}" for k, v in fused.items()) or "none")
            + f" ({convs} Conv in fp32). Float layers: {', '.join(m['float_modules'] or best.excluded) or 'none'}. "
            f"Kept: **{kept}** ({reason}).",
        ]
        if len(trials) > 1:  # the fallback's steps: what each float layer bought and cost
            lines += ["", "| float nodes | ORT accuracy | p50 ms | fp32 p50 ms | speedup |", "|---|---|---|---|---|"]
            lines += [f"| {', '.join(t.excluded) or 'none'} | {acc(t.accuracy)} | {t.p50:.4f} "
                      f"| {t.fp32_p50:.4f} | {t.speedup:.2f}x |" for t in trials]
        m["report_md"] = "\n".join(lines)
        return m


def _strip_debug_metadata(path: Path) -> None:
    """Rewrite an ONNX file without per-node debug metadata, if it has any: an fp32 input exported
    outside this project can carry local paths, and ORT's quantizers copy them to the int8 nodes."""
    import onnx

    proto = onnx.load(str(path))
    if strip_debug_metadata_(proto):
        atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


STAGE = QuantizeStage
