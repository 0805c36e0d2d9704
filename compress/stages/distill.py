"""Distill a student from the teacher: the task's soft-target loss (Hinton KD with a temperature
for classifiers), FitNets hints, and training on an unlabeled transfer set."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from compress.artifacts import ModelArtifact, StageResult, count_params, save_torch
from compress.bench.macs import count_macs
from compress.config.rules import layerwise_refusal
from compress.config.stages import DistillConfig
from compress.config.train import SoftTargets
from compress.data.sources import DataBundle, with_transfer
from compress.errors import ConfigError
from compress.models.build import build_model, load_checkpoint_
from compress.stage_reports import DistillReport
from compress.stages.base import Stage, StageContext
from compress.tasks.base import Task
from compress.tasks.llm_label_file import is_llm, labels_path
from compress.train.checkpoint import TrainingScope
from compress.train.loop import KD, FitData, FitPlan, FitResult, TrainConfig, fit_
from compress.train.onnx_teacher import teacher_module


def distill(student: nn.Module, teacher: nn.Module, task: Task, data: DataBundle, cfg: DistillConfig,
            device, seed: int = 0, progress: bool = True,
            scope: TrainingScope | None = None) -> FitResult:
    """Train ``student`` in place against ``teacher``; the best epoch is chosen on ``data.val``
    (``scope``: the engine's checkpoints and teacher cache; None in a notebook)."""
    train = with_transfer(data.train, data.transfer if cfg.use_transfer else None, cfg.use_labels)
    kd = KD(teacher, SoftTargets.of(cfg), [(h.student, h.teacher) for h in cfg.hints], cfg.hint_weight)
    return fit_(student, task, FitData.of(data, train),
                FitPlan(TrainConfig.of(cfg), device, seed, "distill", progress), kd, scope)


class DistillStage(Stage):
    kind = "distill"

    def trains(self) -> bool:
        return True

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: DistillConfig = self.cfg
        scfg = ctx.student
        if ctx.task.generates:
            return _lm_student(cfg, ctx)
        if is_llm(ctx.teacher):
            return _from_llm(cfg, ctx)
        teacher, scope = teacher_module(ctx.teacher), ctx.scope
        if teacher is None:
            raise ConfigError(f"{ctx.where}: needs a teacher model")
        if scope is not None and scope.teacher is None and ctx.teacher.module is None:
            scope = replace(scope, teacher=teacher)  # an ONNX teacher: its file's hash keys the cache
        spec = _student_spec(scfg, ctx)
        info = ctx.data.info
        if scfg.layers is not None:  # copied from the teacher as trained (a fine-tuned head too)
            from compress.models.hf import layer_drop_student

            student = layer_drop_student(teacher, list(scfg.layers), "student.layers")
        else:
            student = build_model(spec, info.input_shape[0] if info.input_shape else None,
                                  info.num_classes, "student")
        if scfg.checkpoint:
            load_checkpoint_(student, scfg.checkpoint, "student.checkpoint")
        _check_hints(cfg, student, teacher, ctx.where)
        task = _training_task(ctx, cfg, scfg)
        result = distill(student, teacher, task, ctx.data, cfg, ctx.device, ctx.seed,
                         ctx.progress, scope)
        return _saved(student, spec, result, ctx)


def _from_llm(cfg: DistillConfig, ctx: StageContext) -> StageResult:
    """An llm teacher: the student (an hf encoder with a new head, one logit per label, or a
    layer-drop copy of it) learns the LLM's label log-probs of each text through the teacher
    cache, with no gold label (``use_labels`` off); validation picks the epoch by agreement
    with the LLM's top-1 label."""
    from compress.train.llm_table import label_table, llm_val

    scfg, path = ctx.student, labels_path(ctx.teacher)
    table, n_labels = label_table(path, ctx.data)
    spec = {"hf": scfg.hf, "trust_remote_code": scfg.trust_remote_code, "num_labels": n_labels}
    if scfg.layers is not None:
        spec = {"layers": list(scfg.layers), "teacher_hf": scfg.hf,
                "trust_remote_code": scfg.trust_remote_code, "num_labels": n_labels}
    student = build_model(spec, None, n_labels, "student")
    if scfg.checkpoint:
        load_checkpoint_(student, scfg.checkpoint, "student.checkpoint")
    scope = replace(ctx.scope, teacher=table) if ctx.scope is not None else None
    data = llm_val(ctx.data, path)
    result = distill(student, table, ctx.task, data, cfg.model_copy(update={"use_labels": False}),
                     ctx.device, ctx.seed, ctx.progress, scope)
    return _saved(student, spec, result, ctx)


def _lm_student(cfg: DistillConfig, ctx: StageContext) -> StageResult:
    """Task causal-lm: the student keeps some of the teacher's decoder blocks (``layers``, or
    ``keep`` chosen by angular distance), optionally pruned in width (``width``: FFN channels
    and KV groups by activation), and learns the teacher's top-k next-token log-probabilities
    at the temperature, cached once on disk (``compress.train.causal_lm``)."""
    from compress.export.kv_cache import kv_layout
    from compress.models.causal_lm import load_causal_lm
    from compress.models.layer_depth import keep_layers
    from compress.records.causal_lm import LMDistillReport
    from compress.train.causal_lm import LMPlan, cached_topk, choose_layers, distill_lm_, perplexity

    given, scfg, data = ctx.teacher.meta["kv_cache"], ctx.student, ctx.data
    spec = _lm_spec(ctx)
    teacher, _ = load_causal_lm(spec["causal_lm"], "teacher.llm", spec["trust_remote_code"])
    teacher.to(ctx.device)
    choice = choose_layers(teacher, data.train, scfg.layers, scfg.keep,
                           data.info.preprocessing["calibration_windows"], "student")
    student = keep_layers(teacher, choice.kept, "student.layers")
    width = _prune_width_(student, scfg.width, data)
    k = cfg.teacher_topk or 32
    key = {"teacher": ctx.teacher.sha256, "data": ctx.scope.data_key if ctx.scope else None,
           "k": k, "temperature": cfg.temperature}
    cache = None if cfg.teacher_cache == "off" or ctx.scope is None else ctx.scope.cache_dir
    top, hit = cached_topk(teacher, data.train, k, cfg.temperature, cache, key)
    plan = LMPlan(cfg.epochs, cfg.lr, cfg.weight_decay, cfg.optimizer, cfg.schedule,
                  cfg.grad_clip, cfg.batch_size or data.batch_size, cfg.temperature, cfg.alpha,
                  ctx.seed, ctx.progress)
    untrained = perplexity(student, data.val)
    fit = distill_lm_(student, top, data.train, data.val, plan)
    teacher_val = perplexity(teacher, data.val)
    student.cpu()
    spec["layers"] = choice.kept
    if width is not None:  # the rebuild's shapes (compress.models.build)
        spec["ffn_width"], spec["kv_heads"] = width.intermediate_after, width.kv_heads_after
    # the student's own cache layout (its blocks and KV heads), the teacher's stop ids and context
    kv = kv_layout(student).manifest(given["stop_ids"], given["max_context"])
    meta = {"params": count_params(student), "stage": ctx.stage_name, "kv_cache": kv}
    art = save_torch(ModelArtifact("student", "torch", student, spec, meta=meta), ctx.stage_dir)
    report = LMDistillReport(
        metric="perplexity", val=round(fit.best_val, 4), best_epoch=fit.best_epoch,
        teacher_val=round(teacher_val, 4), untrained_val=round(untrained, 4),
        history=fit.history, params=meta["params"], layers=choice.kept,
        distances=[round(d, 5) for d in choice.distances] if choice.distances else None,
        top_k=k, temperature=cfg.temperature, train_tokens=len(data.train) * top.indices.shape[1],
        tokens_per_s=round(fit.tokens_per_s, 1), cache_hit=hit, width=width)
    return StageResult(art, report)


def _prune_width_(student: nn.Module, wcfg, data: DataBundle):
    """``student.width``: every block's FFN and KV groups pruned in place to the kept fractions,
    chosen by their activation on the calibration windows; the report's WidthPruning, or None."""
    if wcfg is None:
        return None
    import torch

    from compress.models.llm_width import prune_width_
    from compress.records.causal_lm import WidthPruning

    n = min(data.info.preprocessing["calibration_windows"], len(data.train))
    device = next(student.parameters()).device
    ids = torch.stack([data.train[i][1] for i in range(n)]).to(device)
    c = prune_width_(student, ids, wcfg.ffn, wcfg.round_to, wcfg.heads)
    return WidthPruning(intermediate_before=c.intermediate_before,
                        intermediate_after=c.intermediate_after, round_to=wcfg.round_to,
                        kv_heads_before=c.kv_heads_before, kv_heads_after=c.kv_heads_after,
                        params_before=c.params_before, params_after=c.params_after)


def _lm_spec(ctx: StageContext) -> dict:
    """The rebuild spec of a causal-lm student: the teacher it copies blocks from."""
    tcfg = ctx.teacher.meta
    return {"causal_lm": tcfg["llm"], "trust_remote_code": bool(tcfg["trust_remote_code"]),
            "layers": None}


def _saved(student, spec: dict, result, ctx: StageContext) -> StageResult:
    """The distilled student saved in the stage folder, with its parameter and MAC counts."""
    student.cpu().eval()
    params, macs = count_params(student), count_macs(student, ctx.example())
    meta = {"params": params, "macs": macs, "stage": ctx.stage_name}
    art = save_torch(ModelArtifact("student", "torch", student, spec, meta=meta), ctx.stage_dir)
    report = DistillReport(metric=ctx.task.metric, val=result.best_val, best_epoch=result.best_epoch,
                           samples_per_s=round(result.samples_per_s, 1), history=result.history,
                           params=params, macs=macs)
    return StageResult(art, report)


def _student_spec(scfg, ctx: StageContext) -> dict:
    if scfg.layers is None:
        return scfg.spec()
    # a layer-drop copy of the hf teacher: rebuilt from the teacher's directory and these layers
    return {"layers": list(scfg.layers), "teacher_hf": ctx.teacher.spec["hf"],
            "trust_remote_code": bool(ctx.teacher.spec.get("trust_remote_code")),
            **({"num_labels": ctx.teacher.spec["num_labels"]} if "num_labels" in ctx.teacher.spec else {})}


def _training_task(ctx: StageContext, cfg: DistillConfig, scfg) -> Task:
    """The run's task, or its layer-wise variant when hidden-state or attention losses are on."""
    if not (cfg.hidden_weight or cfg.attention_weight):
        return ctx.task
    refused = layerwise_refusal(ctx.task.name, scfg.layers is not None)
    if refused:  # validate refuses this first; a notebook call meets it here
        key = "hidden_weight" if cfg.hidden_weight else "attention_weight"
        raise ConfigError(f"{ctx.where}.{key}: {refused}")
    from compress.tasks.embedding import LayerwiseWeights

    weights = LayerwiseWeights(ctx.task.cos_weight, ctx.task.mse_weight, cfg.hidden_weight,
                               cfg.attention_weight)
    return ctx.task.layerwise(scfg.layers, weights)


def _check_hints(cfg: DistillConfig, student: nn.Module, teacher: nn.Module, where: str) -> None:
    for i, h in enumerate(cfg.hints):
        for side, model, name in (("student", student, h.student), ("teacher", teacher, h.teacher)):
            names = dict(model.named_modules())
            if name not in names:
                top = ", ".join(n for n in names if n and "." not in n)
                raise ConfigError(
                    f"{where}.hints[{i}].{side}: no module {name!r} in the {side} "
                    f"(top-level modules: {top})"
                )
