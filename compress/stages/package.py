"""Package the final model as a deploy bundle (``RUN_DIR/bundle/``): ONNX and ORT format, the
operator list for a reduced runtime build, the preprocessing recorded by the data source, test
samples with expected outputs, quality and latency measured in this run, and sha256 hashes; and
the mobile readiness (NNAPI, CoreML) of every ONNX model of the run, with the config's gate."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compress.artifacts import ModelArtifact, StageResult
from compress.bundle import BundleSpec, PackageConfig, package, readiness
from compress.bundle.mobile import EPS
from compress.config.preprocess import ImagePreprocess, Preprocess, TextPreprocess
from compress.errors import InputError
from compress.export.shipped_names import UserNames, user_names, with_user_names
from compress.stage_reports import ReadinessReport, ReadinessRow
from compress.stages.base import Stage, StageContext

BUNDLE = "bundle"


def bundle_spec(model: ModelArtifact, ctx: StageContext, cfg: PackageConfig,
                names: UserNames | None = None) -> BundleSpec:
    """Everything the bundle says, taken from the run: data, task, measurements, config hash;
    inputs under the user's ``names`` where the shipped model takes them back."""
    from compress.bundle.manifest import Latency, Quality
    from compress.common.ort import make_session
    from compress.tasks.base import ort_arrays

    names = names or UserNames()
    record, extra = preprocess_record(ctx)
    inputs, targets = ort_arrays(ctx.task, ctx.data.test, make_session(model.path, 1, "basic"),
                                 cfg.eval_samples)
    inputs = {names.inputs.get(k, k): v for k, v in inputs.items()}
    if isinstance(record, ImagePreprocess) and record.input in names.inputs:
        record = record.model_copy(update={"input": names.inputs[record.input]})
    measured = next((m for m in ctx.measurements if m.sha256 == model.sha256), None)
    if measured is not None:
        quality = Quality(metric=measured.metric, value=measured.accuracy, split=measured.split,
                          metrics=dict(measured.quality))
        latency = Latency(threads=measured.threads, opt_level=measured.opt_level,
                          ms=dict(measured.latency_ms), where="measured where the pipeline ran")
    else:
        quality = Quality(metric=None, value=None, split=None, metrics={})
        latency = Latency(threads=ctx.target.threads, opt_level=ctx.target.opt_level, ms={},
                          where="not measured (no benchmark stage before package)")
    labels = targets if ctx.task.uses.labels else None  # classifiers (images or text)
    return BundleSpec(task=ctx.task.name, preprocess=record, eval_inputs=inputs, labels=labels,
                      quality=quality, latency=latency, precision=model.precision,
                      class_names=_class_names(ctx),
                      config_sha256=ctx.config_sha256, platform=cfg.platform,
                      fix_shapes=cfg.fix_shapes, extra_files=extra,
                      training_data=_corpus_record(ctx))


def _class_names(ctx: StageContext) -> list[str] | None:
    """The name of each of the model's outputs: the data's classes, or, for the student of an
    llm teacher, the teacher's label order (the data's classes, then the verbalisers' labels the
    data lacks: the student has a logit for each)."""
    from compress.tasks.llm_label_file import is_llm, labels_path, read_labels

    if is_llm(ctx.teacher):
        return read_labels(labels_path(ctx.teacher)).labels
    return ctx.data.info.class_names


def _corpus_record(ctx: StageContext) -> str | None:
    """The corpus table, when the run's text came from the built-in sources."""
    from compress.data.corpus import CorpusRecord

    record = ctx.data.info.preprocessing.get("corpus")
    if not isinstance(record, dict) or not record.get("sources"):
        return None
    return CorpusRecord.from_dict(record).markdown()


def preprocess_record(ctx: StageContext) -> tuple[Preprocess, dict[str, Path]]:
    """The data source's preprocessing record and the files it needs shipped; InputError (exit
    2, one line) when the source could not supply it, naming what is missing."""
    info = ctx.data.info
    record = info.preprocess
    if record is None:
        raise InputError(
            f"package: data ({info.source}) records no preprocessing, so the bundle cannot say how a "
            "raw image becomes the model input: state data.preprocess in the YAML (color, size, "
            "resize, scale, mean, std; see compress/config/preprocess.py) or return it from the "
            "factory as {'train': ..., 'val': ..., 'preprocess': ImagePreprocess(...)}")
    if isinstance(record, ImagePreprocess) and info.input_shape is not None \
            and tuple(record.input_shape) != tuple(info.input_shape):
        raise InputError(f"package: data.preprocess makes inputs of shape "
                         f"{list(record.input_shape)}, the data's are {list(info.input_shape)}")
    if not isinstance(record, TextPreprocess):
        return record, {}
    tok = info.tokenizer_dir
    if tok is None or record.tokenizer not in record.tokenizer_files:
        raise InputError(f"package: data.tokenizer: {tok} has no {record.tokenizer} (the "
                         "runner and apps encode with it)")
    return record, {name: tok / name for name in record.tokenizer_files}


def shipped_model(model: ModelArtifact, ctx: StageContext, work: Path) -> tuple[Path, UserNames]:
    """The final model as it ships: with the input and output names of the user's ONNX teacher
    (stamped there by the teacher I/O adapter), written under ``work``; as it is otherwise. A
    text model keeps the task's input names, the ones its tokenizer gives."""
    teacher = ctx.teacher
    if teacher is None or teacher.format != "onnx" or teacher.path is None:
        return model.path, UserNames()
    names = user_names(teacher.path)
    if not isinstance(ctx.data.info.preprocess, ImagePreprocess):
        names = UserNames(outputs=names.outputs)
    if not names:
        return model.path, names
    return with_user_names(model.path, work / "model.onnx", names), names


class PackageStage(Stage):
    kind = "package"

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: PackageConfig = self.cfg
        if ctx.task.generates:
            return _llm_bundle(model, ctx)
        others = {m.name: readiness(m.path) for m in ctx.published.values()
                  if m.format == "onnx" and m.sha256 != model.sha256}
        with tempfile.TemporaryDirectory(prefix="compress-ship-") as work:
            shipped, names = shipped_model(model, ctx, Path(work))
            result = package(shipped, ctx.run_dir / BUNDLE, bundle_spec(model, ctx, cfg, names),
                             cfg)
        ready = {model.name: result.readiness, **others}
        report = ReadinessReport(
            bundle=BUNDLE, model=model.name, files=result.sizes(), fixes=result.manifest["mobile"]["fixes"],
            readiness={name: {ep: ReadinessRow.of(rep[ep]) for ep in EPS} for name, rep in ready.items()},
        )
        # the bundle lives beside the stage folders (RUN_DIR/bundle); its manifest is hashed into
        # stage.json, so a resumed run re-packages when the bundle was changed or removed
        return StageResult(model, report, files=[f"../{BUNDLE}/manifest.json"])


def _llm_bundle(model: ModelArtifact, ctx: StageContext) -> StageResult:
    """A causal LM's bundle: its decoder graph, the teacher's tokenizer, the torch-free
    generate runner, and a manifest with the KV-cache layout and the stop tokens; its runner's
    greedy tokens on a test prompt are compared with the graph's."""
    from compress.bundle.llm_bundle import LLMBundleSpec, write_llm_bundle
    from compress.records.causal_lm import LLMBundleReport

    measured = next((m for m in ctx.measurements if m.sha256 == model.sha256), None)
    tokenizer = Path(ctx.teacher.path).parent / ctx.teacher.meta["tokenizer"]
    spec = LLMBundleSpec(model.meta["kv_cache"], model.precision, measured, ctx.config_sha256)
    done = write_llm_bundle(model.path, tokenizer, ctx.run_dir / BUNDLE, spec,
                            ctx.data.test[0][1][:32].tolist())
    report = LLMBundleReport(bundle=BUNDLE, model=model.name, files=done.sizes(),
                             kv_cache=spec.kv_cache, runner_tokens=done.runner_tokens,
                             runner_tokens_equal=done.tokens_equal)
    return StageResult(model, report, files=[f"../{BUNDLE}/manifest.json"])
