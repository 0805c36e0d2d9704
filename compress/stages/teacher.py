"""Step 00: load or train the teacher, then export its ONNX (the same checked export as the
export stage's) so every later model is measured against it in the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.artifacts import ModelArtifact, StageResult, count_params, save_torch
from compress.bench.macs import onnx_macs
from compress.config.pipeline import TeacherConfig, TeacherStageConfig, export_key  # noqa: F401
from compress.config.stages import ExportConfig
from compress.export.checked import export_checked
from compress.export.teacher_io import (
    DataShape,
    IOPlan,
    apply_plan_,
    check_fit,
    external_files,
    plan_io,
    ports,
    weights_sha256,
)
from compress.models.build import build_model, load_checkpoint_
from compress.stage_reports import OnnxTeacherReport, TeacherReport
from compress.stages.base import Stage, StageContext
from compress.train.loop import FitData, FitPlan, fit_

DATA_FILE = "model.onnx.data"  # a brought teacher's external weights, beside its model.onnx


class TeacherStage(Stage):
    kind = "teacher"

    def trains(self) -> bool:
        return self.cfg.teacher.checkpoint is None and self.cfg.teacher.train is not None

    def key_extra(self, target) -> dict:
        """optimum's baseline is made with this CPU's preset, and only where optimum-onnx imports:
        a teacher cached without it (or for another ISA) is not reused once that changes."""
        if not self.cfg.teacher.optimum_baseline:
            return {}
        from compress.quant.ptq import choose_preset, optimum_missing

        return {"optimum_baseline": {"isa": choose_preset(target.isa).name,
                                     "optimum": optimum_missing() is None}}

    def run(self, model: ModelArtifact | None, ctx: StageContext) -> StageResult:
        tcfg: TeacherConfig = self.cfg.teacher
        if tcfg.onnx is not None:
            return _onnx_teacher(tcfg, ctx)
        if tcfg.llm is not None and ctx.task.generates:
            return _lm_teacher(tcfg, self.cfg.export, ctx)
        if tcfg.llm is not None:
            return _llm_teacher(tcfg, ctx)
        data, spec = ctx.data, ctx.task.model_spec(tcfg.spec(), ctx.data.num_classes)
        net = build_model(spec, _in_channels(data), data.num_classes, "teacher")
        metrics: dict[str, Any] = {}
        if tcfg.checkpoint:
            load_checkpoint_(net, tcfg.checkpoint, "teacher.checkpoint")
        elif tcfg.train is not None:
            fit = fit_(net, ctx.task, FitData.of(data),
                       FitPlan(tcfg.train, ctx.device, ctx.seed, "teacher", ctx.progress), scope=ctx.scope)
            metrics.update({f"val_{ctx.task.metric}": fit.best_val, "best_epoch": fit.best_epoch,
                            "history": fit.history})
        net.cpu().eval()
        path = ctx.stage_dir / "model.onnx"
        cfg: ExportConfig = self.cfg.export
        exported = export_checked(net, ctx.task, ctx.example(cfg.batch_size), path, cfg,
                                  ctx.data.test).metrics()
        # one definition for every model of the run: torch's parameters, MACs on the ONNX graph
        meta = {"params": count_params(net), "macs": onnx_macs(path).total, "stage": "teacher"}
        art = save_torch(ModelArtifact("teacher", "torch", net, spec, meta=meta), ctx.stage_dir)
        onnx_art = ModelArtifact.from_onnx("teacher", path, art.precision, **meta)
        metrics.update(exported, bytes=path.stat().st_size, params=meta["params"],
                       macs=meta["macs"])
        publish = [onnx_art]
        baseline = _optimum_baseline(onnx_art, ctx, meta) if tcfg.optimum_baseline else None
        if baseline is not None:
            publish.append(baseline)
            metrics["optimum_baseline"] = baseline.meta["preset"]
        return StageResult(art, TeacherReport.model_validate(metrics), publish=publish)


def _optimum_baseline(teacher: ModelArtifact, ctx: StageContext, meta: dict) -> ModelArtifact | None:
    """Optimum's dynamic int8 of the full teacher, the baseline a user would otherwise pick;
    ``None``, said in one line, when optimum-onnx (an extra of its own) is not there."""
    from compress.common.console import current
    from compress.quant.ptq import (
        OPTIMUM_PRESETS,
        choose_preset,
        optimum_dynamic_int8,
        optimum_missing,
    )

    why = optimum_missing()
    if why is not None:
        current().info(f"[{ctx.stage_name}] teacher.optimum_baseline skipped: {why}")
        return None
    isa = choose_preset(ctx.target.isa).name
    path = optimum_dynamic_int8(teacher.path, ctx.stage_dir / "optimum-int8.onnx", isa)
    return ModelArtifact.from_onnx("teacher-optimum-int8", path, "int8",
                                   **{**meta, "preset": f"optimum {OPTIMUM_PRESETS[isa]} dynamic"})


def _in_channels(data) -> int | None:
    return data.input_shape[0] if data.input_shape else None


def _load_onnx(src: Path):
    import onnx

    from compress.errors import InputError

    try:
        proto = onnx.load(str(src), format="protobuf")  # with its external data, from beside it
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001 - onnx raises several types for a bad file: name it
        missing = [p.name for p in external_files(src) if not p.is_file()] if _is_onnx(src) else []
        why = f"its external data {missing[0]} is not beside it" if missing else type(e).__name__
        raise InputError(f"teacher.onnx: {src}: not a valid ONNX model ({why})") from e
    return proto


def _is_onnx(src: Path) -> bool:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        onnx.load(str(src), format="protobuf", load_external_data=False)
    except (DecodeError, OSError, ValueError):
        return False
    return True


INLINE_MAX = 1 << 30  # external weights up to 1 GiB go into the .onnx (protobuf's limit is 2 GiB)


def _save_teacher(proto, path: Path, external: bool) -> list[str]:
    """Write the rewritten teacher; weights too big for one protobuf stay external, in
    ``model.onnx.data`` (hashed in stage.json, and named by hash inside the .onnx so its own
    hash follows the weights). Returns the extra files written."""
    import onnx

    from compress.common.files import atomic_write

    size = sum(t.ByteSize() for t in proto.graph.initializer)
    keep_external = external and size > INLINE_MAX
    if keep_external:
        props = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, "compress.weights_sha256": weights_sha256(proto)})
    atomic_write(path, lambda p: onnx.save_model(
        proto, str(p), save_as_external_data=keep_external, all_tensors_to_one_file=True,
        location=DATA_FILE, size_threshold=1024))
    onnx.checker.check_model(str(path))
    return [DATA_FILE] if keep_external else []


def onnx_teacher_plan(tcfg: TeacherConfig, task, proto, data) -> IOPlan:
    """How the brought model's names map onto the task's, checked against the data."""
    model_in, model_out = ports(proto.graph)
    plan = plan_io(model_in, model_out, task.name, task.input_names, task.output_names,
                   tcfg.inputs, tcfg.outputs)
    image = tuple(data.input_shape) if task.name == "classification" and data.input_shape else None
    check_fit(plan, model_in, model_out, task.name,
              DataShape(image, data.num_classes or None, max_label=data.info.max_label))
    return plan


def _onnx_teacher(tcfg: TeacherConfig, ctx: StageContext) -> StageResult:
    """A teacher brought as an ONNX file: its names mapped onto the task's (pooling added for an
    encoder's hidden states), its external data copied beside it; passed on as ONNX."""
    import math
    import shutil

    import onnx

    from compress.common.console import current
    from compress.common.files import atomic_write

    src = Path(tcfg.onnx)
    proto = _load_onnx(src)
    plan = onnx_teacher_plan(tcfg, ctx.task, proto, ctx.data)
    external, changes = external_files(src), plan.changes()
    path, files = ctx.stage_dir / "model.onnx", []
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
              onnx.TensorProto.DOUBLE)  # weights, not shape constants: as near to torch's count as ONNX says
    params = sum(math.prod(t.dims) for t in proto.graph.initializer if t.data_type in floats)
    if not changes and not external:
        atomic_write(path, lambda p: shutil.copyfile(src, p))
    else:
        apply_plan_(proto, plan, ctx.task.output_names)
        files = _save_teacher(proto, path, bool(external))
    what = "; ".join(changes) if changes else "names match the task"
    kept = "copied beside it" if files else "taken into model.onnx (later stages read one file)"
    current().info(f"[{ctx.stage_name}] {src.name}: {what}"
                   + (f"; external data {', '.join(p.name for p in external)} {kept}" if external else ""))
    art = ModelArtifact.from_onnx("teacher", path, params=params, stage="teacher")
    report = OnnxTeacherReport(source=str(src), params=params, io=changes, external_data=files)
    return StageResult(art, report, publish=[art], files=files)


def _llm_teacher(tcfg: TeacherConfig, ctx: StageContext) -> StageResult:
    """A causal LM that labels the texts through its prompt (``compress.export.llm_teacher``):
    its prompt scorer is the teacher's model.onnx, its int8 is published beside it, and the
    label distributions in labels.npz are what the student distils from."""
    from compress.export.llm_teacher import label_with_llm
    from compress.stage_reports import LLMTeacherReport
    from compress.tasks.llm_label_file import LABELS_FILE

    root = ctx.scope.cache_dir if ctx.scope is not None and ctx.scope.cache_dir else ctx.run_dir / ".cache"
    done = label_with_llm(tcfg, ctx.data, ctx.stage_dir, Path(root) / "llm", ctx.device, ctx.progress)
    meta = {"params": done.facts["params"], "stage": "teacher", "llm_labels": LABELS_FILE,
            "prompt_median_tokens": done.facts["prompt_median_tokens"]}
    art = ModelArtifact.from_onnx("teacher", done.scorer, "fp32", **meta)
    int8 = ModelArtifact.from_onnx("teacher-int8", done.int8, "int8", **meta)
    return StageResult(art, LLMTeacherReport.model_validate(done.facts), publish=[art, int8],
                       files=[LABELS_FILE])


def _lm_teacher(tcfg: TeacherConfig, export: ExportConfig, ctx: StageContext) -> StageResult:
    """A causal LM to distil (task causal-lm): its KV-cache decoder graph is the teacher's
    model.onnx (parity against torch over a prefill and ``export.parity_steps`` greedy steps on
    a test prompt), its own quantized decoders (``teacher.peers``) are published beside it, and
    its tokenizer is saved for the bundle."""
    from compress.export.kv_cache import check_kv_parity, export_kv_decoder
    from compress.models.causal_lm import load_causal_lm
    from compress.quant.decoder import quantize_decoder
    from compress.records.causal_lm import LMTeacherReport

    net, tokenizer = load_causal_lm(tcfg.llm, "teacher.llm", tcfg.trust_remote_code)
    path = ctx.stage_dir / "model.onnx"
    layout = export_kv_decoder(net, path, export.opset)
    prompt = ctx.data.test[0][1][:32].tolist()
    parity = check_kv_parity(path, net, prompt, export.parity_steps, export.atol)
    tokenizer.backend_tokenizer.save(str(ctx.stage_dir / "tokenizer.json"))
    stops = sorted({t for t in (tokenizer.eos_token_id, net.generation_config.eos_token_id)
                    for t in (t if isinstance(t, list) else [t]) if t is not None})
    kv = layout.manifest(stops, int(getattr(net.config, "max_position_embeddings", 2048)))
    meta = {"params": count_params(net), "stage": "teacher", "kv_cache": kv,
            "tokenizer": "tokenizer.json", "llm": tcfg.llm,
            "trust_remote_code": tcfg.trust_remote_code}
    art = ModelArtifact.from_onnx("teacher", path, "fp32", **meta)
    publish = [art]
    for precision in tcfg.peers:
        q = quantize_decoder(path, ctx.stage_dir / f"model.{precision}.onnx", precision)
        publish.append(ModelArtifact.from_onnx(f"teacher-{precision}", q, precision, **meta))
    report = LMTeacherReport(
        llm=tcfg.llm, params=meta["params"], layers=layout.num_layers, bytes=path.stat().st_size,
        max_abs_logit_diff=parity.max_abs_logit_diff, parity_steps=export.parity_steps,
        greedy_tokens_equal=parity.tokens_equal,
        peers={p.precision: p.path.stat().st_size for p in publish[1:]}, stop_ids=stops,
        max_context=kv["max_context"], tokenizer="tokenizer.json")
    return StageResult(art, report, publish=publish, files=["tokenizer.json"])
