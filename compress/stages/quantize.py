"""Quantize to int8: static or dynamic PTQ in ONNX Runtime, or QAT in PyTorch (torchao PT2E).

Every int8 model is measured against its fp32 input in the same run: ORT accuracy, top-1
agreement and interleaved latency. When int8 loses too much accuracy the most sensitive layers
stay in float; when int8 is not faster the fp32 model is kept, and the reason gives the figures.
``quantize(onnx_path, cfg, task, data, target)`` does the PTQ work without a pipeline; the stage
calls it. The ONNX Runtime helpers live in compress/quant/ptq.py.
"""

from __future__ import annotations

import copy
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from compress.artifacts import ModelArtifact, StageResult
from compress.common.files import atomic_write
from compress.config.stages import QATConfig, QuantizeConfig, TargetConfig
from compress.config.train import SoftTargets
from compress.errors import ConfigError, GateError
from compress.export.torch_onnx import export_onnx, strip_debug_metadata_
from compress.quant import qat as qatq
from compress.quant.judge import Job, Judge, Trial
from compress.quant.ptq import (
    FUSED_OPS,
    Int8Preset,
    choose_preset,
    count_ops,
    fused_ops,
    modules_of,
    preprocess,
    quantize_dynamic_onnx,
    quantize_static_onnx,
    rank_sensitive_nodes,
)
from compress.stage_reports import (
    AutoChoice,
    Calibration,
    Fp32Side,
    Int8Side,
    QatTraining,
    QuantizeReport,
    SensitiveTensor,
)
from compress.stages.base import Stage, StageContext
from compress.train.loop import KD, FitData, FitPlan, TrainConfig, fit_
from compress.train.onnx_teacher import teacher_module

if TYPE_CHECKING:
    from compress.data.sources import DataBundle
    from compress.tasks.base import Task


@dataclass
class QuantizeOutcome:
    """The int8 model written and the stage's report: which model to keep (``report.kept``) and
    why (``report.reason``), with every candidate tried."""

    path: Path
    precision: str  # int8, or mixed when layers stayed in float
    report: QuantizeReport

    @property
    def keep_int8(self) -> bool:
        return self.report.kept == "int8"


def quantize(onnx_path: Path, cfg: QuantizeConfig, task: Task, data: DataBundle, target: TargetConfig,
             out_dir: Path | None = None, seed: int = 0, where: str = "quantize") -> QuantizeOutcome:
    """Post-training int8 (``cfg.mode`` static, dynamic or auto) of an fp32 ONNX model, judged
    against it on ``data.val`` and timed as ``target`` says; writes ``out_dir/model.int8.onnx``
    (default: beside the input). Raises GateError when the accuracy limit is not met and
    ``cfg.if_not_met`` is fail."""
    if cfg.mode == "qat":
        raise ConfigError(f"{where}.mode: qat trains a torch model; quantize() takes an ONNX file "
                          "(use static, dynamic or auto, or a pipeline's quantize stage)")
    out = Path(out_dir) if out_dir is not None else Path(onnx_path).parent
    out.mkdir(parents=True, exist_ok=True)
    return _quantize(Path(onnx_path), Job(cfg, task, data, target, out, seed, where))


@dataclass
class Found:
    """What one mode tried: its best candidate, every trial, and the sensitivity ranking used."""

    mode: str  # static | dynamic | qat
    best: Trial
    trials: list[Trial]
    ranking: list[dict] = field(default_factory=list)


# -- the work -----------------------------------------------------------------------------------


def _quantize(fp32: Path, job: Job, given: Path | None = None,
              qat: QatTraining | None = None) -> QuantizeOutcome:
    """Find the int8 candidates (``given``: the one QAT trained), keep the best, report."""
    judge = Judge(fp32, job)
    if given is not None:
        found, auto = Found("qat", judge.trial(given, []), []), None
        found.trials = [found.best]
    elif job.cfg.mode == "auto":
        found, auto = _auto(judge, fp32, job)
    else:
        found, auto = _search(judge, fp32, job, job.cfg.mode), None
    _settle(judge, found.best, job)
    final = job.out / "model.int8.onnx"
    if found.best.path != final:
        found.best.path.replace(final)
        found.best.path = final
    _strip_debug_metadata(final)
    for extra in job.out.glob("trial-*.onnx"):
        extra.unlink()
    precision = "mixed" if found.best.excluded else "int8"
    report = _report(judge, found, auto, qat, final, precision)
    return QuantizeOutcome(final, precision, report)


def _auto(judge: Judge, fp32: Path, job: Job) -> tuple[Found, AutoChoice]:
    """Static and dynamic both, judged alike: the fastest that meets the accuracy limit wins
    (else the most accurate). Static QDQ fuses well on CNNs and collapses MiniLM; dynamic is
    the transformer path and runs CNNs 5x slower: measured, not assumed."""
    found = {m: _search(judge, fp32, job, m, prefix=f"{m}-") for m in ("static", "dynamic")}
    accurate = [m for m in found if judge.accurate(found[m].best)]
    if accurate:
        mode = min(accurate, key=lambda m: found[m].best.p50)
    else:
        mode = max(found, key=lambda m: (found[m].best.accuracy or 0, found[m].best.cosine))
    return found[mode], AutoChoice(chosen=mode, static=found["static"].best.record(),
                                   dynamic=found["dynamic"].best.record())


def _search(judge: Judge, fp32: Path, job: Job, mode: str, prefix: str = "") -> Found:
    """Quantize in ``mode``; static keeps the most sensitive layers in float until the accuracy
    limit holds (dynamic quantizes no activations ahead of time, so it has no such fallback)."""
    from compress.common.ort import make_session
    from compress.tasks.base import ort_arrays

    cfg = job.cfg
    calib = ort_arrays(job.task, job.data.calibration(cfg.calibration_samples, seed=job.seed),
                       make_session(fp32, 1, "basic"))[0]
    src = preprocess(fp32, job.out / f"trial-{prefix}pre.onnx")
    scheme = job.scheme[2]

    def make(excluded: list[str], k: int) -> Path:
        dst = job.out / f"trial-{prefix}{k}.onnx"
        if mode == "static":
            return quantize_static_onnx(src, dst, calib, scheme, excluded, per_channel=cfg.per_channel,
                                        calibrate_method=cfg.calibrate_method, op_types=cfg.op_types)
        return quantize_dynamic_onnx(src, dst, scheme, excluded, per_channel=cfg.per_channel,
                                     op_types=cfg.op_types)

    excluded = list(cfg.exclude)
    first = judge.trial(make(excluded, 0), excluded)
    found = Found(mode, first, [first])
    if judge.accurate(first) or cfg.max_float_layers == 0 or mode != "static":
        return found
    ranking = rank_sensitive_nodes(src, first.path, {k: v[:64] for k, v in calib.items()})
    for group in ranking:
        if len(found.trials) > cfg.max_float_layers:
            break
        if all(n in excluded for n in group["nodes"]):
            continue
        excluded += [n for n in group["nodes"] if n not in excluded]
        t = judge.trial(make(excluded, len(found.trials)), excluded)
        found.trials.append(t)
        if judge.better(t, found.best) or judge.accurate(t):
            found.best = t
        if judge.accurate(t):
            break
    found.ranking = ranking[: max(cfg.max_float_layers, 2)]
    return found


def _settle(judge: Judge, best: Trial, job: Job) -> None:
    """Fail (exit 3) when no candidate met the accuracy limit and the config says fail."""
    cfg = job.cfg
    if judge.accurate(best) or cfg.if_not_met == "keep_fp32":
        return
    if judge.labeled:
        got = (f"best {best.accuracy * 100:.2f}% vs fp32 {judge.fp32_accuracy * 100:.2f}% "
               f"({judge.drop(best) * 100:.2f} points, limit {cfg.max_accuracy_drop * 100:g} points)")
    else:
        got = f"best mean cosine {best.cosine:.4f} (min_cosine {cfg.min_cosine:g})"
    floats = ", ".join(best.excluded) or "none"
    raise GateError(f"{job.where}: int8 accuracy limit not met: {got}, with {len(best.excluded)} "
                    f"layer(s) in float ({floats}), p50 {best.p50:.4f} ms vs fp32 {best.fp32_p50:.4f} ms")


def _verdict(judge: Judge, best: Trial, job: Job) -> tuple[str, str, float | None]:
    """Keep int8 or fp32, the reason in measured figures, and ORT's per-call floor when timed."""
    name, _, scheme = job.scheme
    min_speedup = job.cfg.min_speedup
    machine = {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine().lower(), platform.machine().lower())
    if not judge.accurate(best):
        return "fp32", f"no int8 model met the accuracy limit ({judge.shortfall(best)}; if_not_met: keep_fp32)", None
    if machine != scheme.arch:  # speed is only judged on the CPU the target describes
        return "int8", f"latency measured on {platform.machine()}, not on the {name} target: verify there", None
    row = best.record()  # the figures as the report stores them
    timing = f"p50 {row.p50_ms:.4f} ms vs fp32 {row.fp32_p50_ms:.4f} ms, {row.speedup:.2f}x"
    if best.speedup >= min_speedup:
        verdict = "int8 is faster" if row.speedup > 1 else "int8 is not faster but meets min_speedup"
        return "int8", f"{verdict}: {timing} (min_speedup {min_speedup:g})", None
    floor = _call_floor_ms(judge)
    return "fp32", (f"int8 is not faster: {timing} (min_speedup {min_speedup:g}); ORT's per-call "
                    f"time on an Identity graph with the same input is {floor:.4f} ms, "
                    f"{floor / row.fp32_p50_ms:.0%} of fp32's p50"), floor


def _call_floor_ms(judge: Judge) -> float:
    """p50 (ms) of a graph that only passes its inputs through: what every call costs in ORT
    before any layer runs, timed interleaved with the fp32 model."""
    import onnx
    from onnx import helper

    inputs = [i for i in onnx.load(str(judge.fp32), load_external_data=False).graph.input
              if i.name in judge.timing_feed]
    outs = [helper.make_tensor_value_info(f"{i.name}_out", i.type.tensor_type.elem_type, None)
            for i in inputs]
    nodes = [helper.make_node("Identity", [i.name], [f"{i.name}_out"]) for i in inputs]
    model = helper.make_model(helper.make_graph(nodes, "call_floor", inputs, outs),
                              opset_imports=[helper.make_opsetid("", 18)])
    path = judge.job.out / "trial-call-floor.onnx"
    atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))
    try:
        return judge.time(path)[1]
    finally:
        path.unlink()


def _report(judge: Judge, found: Found, auto: AutoChoice | None, qat: QatTraining | None, int8: Path,
            precision: str) -> QuantizeReport:
    job, best, fp32 = judge.job, found.best, judge.fp32
    name, evidence, scheme = job.scheme
    kept, reason, floor = _verdict(judge, best, job)
    ops = fused_ops(int8, judge.level)
    calib = Calibration(method=job.cfg.calibrate_method, samples=job.cfg.calibration_samples, split="train")
    return QuantizeReport(
        mode=f"auto: {found.mode}" if auto else found.mode, scheme=name, scheme_evidence=evidence,
        activation_type=scheme.activation, weight_type=scheme.weight, reduce_range=scheme.reduce_range,
        per_channel=job.cfg.per_channel, scheme_why=scheme.why, qat=qat, auto=auto,
        fp32=Fp32Side(bytes=fp32.stat().st_size, accuracy=judge.fp32_accuracy, p50_ms=round(best.fp32_p50, 5)),
        int8=Int8Side(**best.record().model_dump(), bytes=int8.stat().st_size, precision=precision),
        split="val", fused_ops={k: ops[k] for k in FUSED_OPS if k in ops}, conv_count=count_ops(fp32, "Conv"),
        ort_ops=ops, float_layers=best.excluded, float_modules=modules_of(fp32, best.excluded),
        trials=[t.record() for t in found.trials],
        sensitivity=[SensitiveTensor(**g) for g in found.ranking],
        kept=kept, reason=reason, threads=job.target.threads, opt_level=judge.level,
        calibration=calib if found.mode == "static" else None, call_floor_ms=floor,
    )


def _strip_debug_metadata(path: Path) -> None:
    """Rewrite an ONNX file without per-node debug metadata, if it has any: an fp32 input exported
    outside this project can carry local paths, and ORT's quantizers copy them to the int8 nodes."""
    import onnx

    proto = onnx.load(str(path))
    if strip_debug_metadata_(proto):
        atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


# -- the stage ----------------------------------------------------------------------------------


class QuantizeStage(Stage):
    kind = "quantize"
    uses_target = True  # keep-int8 decisions are measured as the target says

    def trains(self) -> bool:
        return self.cfg.mode == "qat"

    def key_extra(self, target) -> dict:
        # isa: auto resolves from this CPU's flags, so a run dir moved to another CPU re-runs
        return {"isa": choose_preset(target.isa).name}

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: QuantizeConfig = self.cfg
        if ctx.task.generates:
            return _decoder(cfg, model, ctx)
        job = Job(cfg, ctx.task, ctx.data, ctx.target, ctx.stage_dir, ctx.seed, ctx.where)
        meta = {**model.meta, "stage": ctx.stage_name}
        publish: list[ModelArtifact] = []
        if self.trains():
            fp32_path, int8_path, qat = _qat(cfg.qat, model, ctx, job.scheme[2])
            fp32_art = ModelArtifact.from_onnx(model.name, fp32_path, "fp32", **meta)
            publish.append(fp32_art)
            outcome = _quantize(fp32_path, job, int8_path, qat)
        else:
            fp32_art, outcome = model, _quantize(model.path, job)
        int8_art = ModelArtifact.from_onnx(f"{model.name}-int8", outcome.path, outcome.precision, **meta)
        publish.append(int8_art)
        return StageResult(int8_art if outcome.keep_int8 else fp32_art, outcome.report, publish=publish)


def _decoder(cfg: QuantizeConfig, model: ModelArtifact, ctx: StageContext) -> StageResult:
    """A causal LM's decoder graph: each of ``precisions`` judged on the validation windows
    and timed beside fp32 (``compress.quant.decoder_choice``); the fastest within the budget is
    passed on, every one is published for the benchmark."""
    from compress.export.kv_cache import KVCacheLayout
    from compress.quant.decoder_choice import DecoderBudget, choose_decoder

    kv = model.meta["kv_cache"]
    budget = DecoderBudget(cfg.max_perplexity_ratio, cfg.min_speedup,
                           context=min(128, kv["max_context"] - 32), threads=ctx.target.threads,
                           opt_level=ctx.target.opt_level)
    val = ctx.task.arrays(ctx.data.val)[1]
    choice = choose_decoder(model.path, KVCacheLayout.from_manifest(kv), list(cfg.precisions),
                            val, budget, ctx.stage_dir)
    if not choice.any_within_budget and cfg.if_not_met == "fail":
        raise GateError(f"{ctx.where}: no precision within max_perplexity_ratio "
                        f"{cfg.max_perplexity_ratio:g}: {choice.report.reason}")
    meta = {**model.meta, "stage": ctx.stage_name}
    arts = {p: ModelArtifact.from_onnx(f"{model.name}-{p}", path, p, **meta)
            for p, path in choice.paths.items()}
    return StageResult(arts.get(choice.kept, model), choice.report, publish=list(arts.values()))


def _qat(q: QATConfig, model: ModelArtifact, ctx: StageContext, target: Int8Preset) -> tuple[Path, Path, QatTraining]:
    """Fake-quant training in PyTorch, then the fp32 and the converted int8 model as ONNX."""
    example = ctx.task.example(ctx.data.test, q.batch_size_onnx)
    fp32_path = export_onnx(model.module, example, ctx.stage_dir / "model.fp32.onnx", q.opset,
                            output_names=ctx.task.output_names)
    scheme = qatq.QATScheme("int8" if target.activation == "QInt8" else "uint8",
                            target.int8_weight_bits)
    if len(example) != 1:
        raise ConfigError(f"{ctx.where}.mode: qat handles models with one input "
                          f"(this one has {', '.join(example)}); use mode: dynamic or static")
    trace = next(iter(ctx.task.example(ctx.data.calibration(4, seed=ctx.seed), 4).values()))
    prepared = qatq.prepare_qat(copy.deepcopy(model.module).cpu(), trace, scheme, q.fold_bn)
    teacher = teacher_module(ctx.teacher)
    train_cfg = TrainConfig.of(q)
    fit = fit_(prepared, ctx.task, FitData.of(ctx.data),
               FitPlan(train_cfg, ctx.device, ctx.seed, "qat", ctx.progress),
               KD(teacher, SoftTargets.of(q)) if teacher is not None else None, scope=ctx.scope)
    converted = qatq.convert_qat(prepared)
    int8_path = qatq.export_qdq_onnx(converted, next(iter(example.values())),
                                     ctx.stage_dir / "trial-qat.onnx", q.opset)
    return fp32_path, int8_path, QatTraining(metric=ctx.task.metric, val_fake_quant=fit.best_val,
                                             best_epoch=fit.best_epoch, kd=teacher is not None,
                                             history=fit.history)

