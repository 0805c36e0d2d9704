"""Package the final model as a deploy bundle (``RUN_DIR/bundle/``): ONNX and ORT format, the
operator list for a reduced runtime build, the preprocessing recorded by the data source, test
samples with expected outputs, quality and latency measured in this run, and sha256 hashes; and
the mobile readiness (NNAPI, CoreML) of every ONNX model of the run, with the config's gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.artifacts import ModelArtifact, StageResult
from compress.bundle import BundleSpec, PackageConfig, package, readiness
from compress.stages.base import Stage, StageContext

BUNDLE = "bundle"


def bundle_spec(model: ModelArtifact, ctx: StageContext, cfg: PackageConfig) -> BundleSpec:
    """Everything the bundle says, taken from the run: data, task, measurements, config hash."""
    from compress.common.ort import make_session
    from compress.tasks.base import ort_arrays

    inputs, targets = ort_arrays(ctx.task, ctx.data.test, make_session(model.path, 1, "basic"),
                                 cfg.eval_samples)
    measured = next((m for m in ctx.measurements if m.sha256 == model.sha256), None)
    quality: dict[str, Any] = {}
    latency: dict[str, Any] = {"threads": ctx.target.threads, "opt_level": ctx.target.opt_level}
    if measured is not None:
        quality = {"metric": measured.metric, "value": measured.accuracy, "split": measured.split,
                   **measured.quality}
        latency.update(measured.latency_ms, machine_note="measured where the pipeline ran")
    labels = targets if ctx.task.name == "classification" else None
    prep = dict(ctx.data.info.preprocessing)
    extra = {}
    if prep.get("tokenizer_dir"):  # text models ship their tokenizer: the app needs only it
        from compress.models.hf import TOKENIZER_FILES

        tok = Path(prep.pop("tokenizer_dir"))
        extra = {name: tok / name for name in TOKENIZER_FILES if (tok / name).is_file()}
        prep["tokenizer_files"] = sorted(extra)
    return BundleSpec(task=ctx.task.name, preprocess=prep, eval_inputs=inputs, labels=labels,
                      quality=quality, latency=latency, config_sha256=ctx.config_sha256,
                      platform=cfg.platform, fix_shapes=cfg.fix_shapes, extra_files=extra)


class PackageStage(Stage):
    kind = "package"

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: PackageConfig = self.cfg
        others = {m.name: readiness(m.path) for m in ctx.published.values()
                  if m.format == "onnx" and m.sha256 != model.sha256}
        result = package(model.path, ctx.run_dir / BUNDLE, bundle_spec(model, ctx, cfg), cfg)
        ready = {model.name: result.readiness, **others}
        metrics = {
            "bundle": BUNDLE, "model": model.name, "files": result.sizes(),
            "fixes": result.manifest["mobile"]["fixes"],
            "readiness": {name: {ep: {k: r[k] for k in ("fraction", "supported_nodes", "nodes", "partitions",
                                                         "unsupported_ops")}
                                 for ep, r in rep.items() if isinstance(r, dict)}
                          for name, rep in ready.items()},
        }
        # the bundle lives beside the stage folders (RUN_DIR/bundle); its manifest is hashed into
        # stage.json, so a resumed run re-packages when the bundle was changed or removed
        return StageResult(model, metrics, files=[f"../{BUNDLE}/manifest.json"])
