"""Quantize to int8: static or dynamic PTQ in ONNX Runtime, or QAT in PyTorch (torchao PT2E).

Every int8 model is measured against its fp32 input in the same run: ORT accuracy, top-1
agreement and interleaved latency. When int8 loses too much accuracy the most sensitive layers
stay in float; when int8 is not faster the fp32 model is kept, and the metrics say so.
The ONNX Runtime helpers live in compress/quant/ptq.py.
"""

from __future__ import annotations

import copy
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.artifacts import ModelArtifact, StageResult
from compress.common.files import atomic_write
from compress.config.stages import QATConfig, QuantizeConfig
from compress.errors import ConfigError, GateError
from compress.export.torch_onnx import export_onnx, strip_debug_metadata_
from compress.quant import qat as qatq
from compress.quant.ptq import (
    FUSED_OPS,
    TARGETS,
    Target,
    count_ops,
    detect_target,
    fused_ops,
    mean_cosine,
    modules_of,
    preprocess,
    quantize_dynamic_onnx,
    quantize_static_onnx,
    rank_sensitive_nodes,
)
from compress.stages.base import Stage, StageContext
from compress.train.loop import KD, TrainConfig, fit_


def quantize_onnx(src: Path, dst: Path, cfg: QuantizeConfig, target: Target, exclude: list[str],
                  calib: dict[str, np.ndarray] | None = None) -> Path:
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
    """Measures candidates against the fp32 model on the validation split (the fallback chooses
    on it): ORT accuracy for classifiers, top-1 agreement, output cosine, and p50 latency
    interleaved with fp32."""

    def __init__(self, fp32: Path, ctx: StageContext, cfg: QuantizeConfig):
        from compress.common.ort import make_session, timing_feed
        from compress.tasks.base import ort_arrays

        self.fp32, self.ctx, self.cfg = fp32, ctx, cfg
        sess = make_session(fp32, 1, "basic")
        self.feeds, self.y = ort_arrays(ctx.task, ctx.data.val, sess)
        if {i.name for i in sess.get_inputs()} != set(self.feeds):
            # a model the data does not fit (an ONNX file brought as is): judge on seeded inputs
            from compress.bench.latency import random_feeds

            rows = [random_feeds(sess, seed=i) for i in range(8)]
            self.feeds = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
            self.y = np.full(len(next(iter(self.feeds.values()))), -1)
        self.labeled = ctx.task.name == "classification" and bool((self.y >= 0).any())
        self.ref = self._outputs(fp32)
        self.fp32_accuracy = self._accuracy(self.ref)
        self.timing_feed = timing_feed(sess, self.feeds)

    @property
    def _level(self) -> str:
        return self.ctx.target.opt_level

    def _outputs(self, path: Path) -> np.ndarray:
        from compress.common.ort import make_session, run_batched

        return run_batched(make_session(path, 1, self._level), self.feeds)[0]

    def _accuracy(self, out: np.ndarray) -> float | None:
        return self.ctx.task.quality(out, self.y)["accuracy"] if self.labeled else None

    def trial(self, path: Path, excluded: list[str]) -> Trial:
        from compress.bench.latency import measure_interleaved

        out = self._outputs(path)
        agree = float((out.argmax(-1) == self.ref.argmax(-1)).mean())
        b = self.ctx.target
        fp32_m, m = measure_interleaved([self.fp32, path], [self.timing_feed] * 2, b.threads, self._level,
                                        b.runs, b.warmup)
        return Trial(path, list(excluded), self._accuracy(out), agree, mean_cosine(self.ref, out),
                     fp32_m.stats.p50, m.stats.p50)

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
    uses_target = True  # keep-int8 decisions are measured as the target says

    def trains(self) -> bool:
        return self.cfg.mode == "qat"

    def key_extra(self, target) -> dict:
        # isa: auto resolves from this CPU's flags, so a run dir moved to another CPU re-runs
        return {"isa": detect_target()[0] if target.isa == "auto" else target.isa}

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: QuantizeConfig = self.cfg
        self.ranking: list[dict] = []
        want = "torch" if cfg.mode == "qat" else "onnx"
        if model.format != want:
            place = "before the export stage" if want == "torch" else "after an export stage"
            raise ConfigError(f"{ctx.where}.mode: {cfg.mode} quantization needs a {want} model (put "
                              f"this stage {place}); the previous stage produced a {model.format} model")
        if ctx.target.opt_level in ("disable", "basic"):
            raise ConfigError(f"target.opt_level {ctx.target.opt_level!r} leaves QDQ int8 "
                              "models unfused and slower than fp32; use 'extended' or 'all'")
        isa = ctx.target.isa
        name, evidence = detect_target() if isa == "auto" else (isa, "configured")
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
        if cfg.mode == "auto":
            best, trials, metrics["auto"] = self._auto(judge, fp32_path, ctx, cfg, target)
            metrics["mode"] = f"auto: {metrics['auto']['chosen']}"
        else:
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
        out = int8_art if kept == "int8" else fp32_art
        return StageResult(out, metrics, publish=publish)

    def _auto(self, judge: Judge, fp32_path: Path, ctx: StageContext, cfg: QuantizeConfig,
              target: Target) -> tuple[Trial, list[Trial], dict]:
        """Static and dynamic both, judged alike: the fastest that meets the accuracy limit wins
        (else the most accurate). Static QDQ fuses well on CNNs and collapses MiniLM; dynamic is
        the transformer path and runs CNNs 5x slower: measured, not assumed."""
        found: dict[str, tuple[Trial, list[Trial]]] = {}
        for mode in ("static", "dynamic"):
            sub = cfg.model_copy(update={"mode": mode, "if_not_met": "keep_fp32"})
            found[mode] = self._search(judge, fp32_path, None, ctx, sub, target, prefix=f"{mode}-")
        accurate = [m for m in found if judge.accurate(found[m][0])]
        if accurate:
            mode = min(accurate, key=lambda m: found[m][0].p50)
        else:
            mode = max(found, key=lambda m: (found[m][0].accuracy or 0, found[m][0].cosine))
        self.chosen_mode = mode
        best, trials = self._settle(judge, found[mode][0], found[mode][1], cfg, ctx)
        return best, trials, {"chosen": mode, **{m: t[0].row() for m, t in found.items()}}

    def _search(self, judge: Judge, fp32_path: Path, int8_path: Path | None, ctx: StageContext,
                cfg: QuantizeConfig, target: Target, prefix: str = "") -> tuple[Trial, list[Trial]]:
        """Quantize, then keep the most sensitive layers in float until the accuracy limit holds."""
        if int8_path is not None:  # qat: the trained model is the one candidate
            trials = [judge.trial(int8_path, [])]
            return self._settle(judge, trials[0], trials, cfg, ctx)
        from compress.common.ort import make_session
        from compress.tasks.base import ort_arrays

        calib = ort_arrays(ctx.task, ctx.data.calibration(cfg.calibration_samples, seed=ctx.seed),
                           make_session(fp32_path, 1, "basic"))[0]
        if set(calib) != set(judge.feeds):  # a model the data does not fit: its seeded inputs
            calib = judge.feeds
        src = preprocess(fp32_path, ctx.stage_dir / f"trial-{prefix}pre.onnx")

        def make(excluded: list[str], k: int) -> Path:
            return quantize_onnx(src, ctx.stage_dir / f"trial-{prefix}{k}.onnx", cfg, target, excluded,
                                 calib)

        excluded = list(cfg.exclude)
        first = judge.trial(make(excluded, 0), excluded)
        trials, best = [first], first
        if judge.accurate(first) or cfg.max_float_layers == 0 or cfg.mode != "static":
            return self._settle(judge, best, trials, cfg, ctx)
        ranking = rank_sensitive_nodes(src, first.path, {k: v[:64] for k, v in calib.items()})
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

    def _mode(self) -> str:
        return getattr(self, "chosen_mode", self.cfg.mode)

    def _qat(self, model: ModelArtifact, ctx: StageContext, target: Target) -> tuple[Path, Path, dict]:
        q: QATConfig = self.cfg.qat
        example = ctx.task.example(ctx.data.test, q.batch_size_onnx)
        fp32_path = export_onnx(model.module, example, ctx.stage_dir / "model.fp32.onnx", q.opset,
                                output_names=ctx.task.output_names)
        scheme = qatq.QATScheme("int8" if target.activation == "QInt8" else "uint8",
                                7 if target.reduce_range else 8)
        if len(example) != 1:
            raise ConfigError(f"{ctx.where}.mode: qat handles models with one input "
                              f"(this one has {', '.join(example)}); use mode: dynamic or static")
        trace = next(iter(ctx.task.example(ctx.data.calibration(4, seed=ctx.seed), 4).values()))
        prepared = qatq.prepare_qat(copy.deepcopy(model.module).cpu(), trace, scheme, q.fold_bn)
        teacher = ctx.teacher.module if ctx.teacher is not None else None
        train_cfg = TrainConfig.of(q)
        fit = fit_(prepared, ctx.task, ctx.data.train, ctx.data.val, train_cfg, ctx.data.batch_size,
                   ctx.device, teacher=teacher, kd=KD(q.temperature, q.alpha),
                   augment_shift=ctx.data.augment_shift, seed=ctx.seed, desc="qat", progress=ctx.progress)
        converted = qatq.convert_qat(prepared)
        int8_path = qatq.export_qdq_onnx(converted, next(iter(example.values())),
                                         ctx.stage_dir / "trial-qat.onnx", q.opset)
        return fp32_path, int8_path, {f"val_{ctx.task.metric}_fake_quant": fit.best_val,
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
            "split": "val",
            "fused_ops": fused, "conv_count": convs, "ort_ops": ops,
            "float_layers": best.excluded, "float_modules": modules_of(fp32, best.excluded),
            "trials": [t.row() for t in trials],
            "sensitivity": self.ranking,
            "kept": kept, "reason": reason, "threads": ctx.target.threads, "opt_level": judge._level,
            "calibration": {"method": self.cfg.calibrate_method, "samples": self.cfg.calibration_samples,
                            "split": "train"} if self._mode() == "static" else None,
        }

        return m


def _strip_debug_metadata(path: Path) -> None:
    """Rewrite an ONNX file without per-node debug metadata, if it has any: an fp32 input exported
    outside this project can carry local paths, and ORT's quantizers copy them to the int8 nodes."""
    import onnx

    proto = onnx.load(str(path))
    if strip_debug_metadata_(proto):
        atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


STAGE = QuantizeStage
