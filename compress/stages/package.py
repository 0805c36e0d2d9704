"""Package the final model as a deploy bundle (``RUN_DIR/bundle/``): ONNX and ORT format, the
operator list for a reduced runtime build, the preprocessing recorded by the data source, test
samples with expected outputs, quality and latency measured in this run, and sha256 hashes; and
the mobile readiness (NNAPI, CoreML) of every ONNX model of the run, with the config's gate."""

from __future__ import annotations

from typing import Any

import numpy as np

from compress.artifacts import ModelArtifact, StageResult
from compress.bundle import BundleSpec, PackageConfig, package, readiness
from compress.stages.base import Stage, StageContext

BUNDLE = "bundle"


def bundle_spec(model: ModelArtifact, ctx: StageContext, cfg: PackageConfig) -> BundleSpec:
    """Everything the bundle says, taken from the run: data, task, measurements, config hash."""
    inputs, targets = ctx.task.arrays(ctx.data.test, cfg.eval_samples)
    measured = next((m for m in ctx.measurements if m.sha256 == model.sha256), None)
    quality: dict[str, Any] = {}
    latency: dict[str, Any] = {"threads": ctx.target.threads, "opt_level": ctx.target.opt_level}
    if measured is not None:
        quality = {"metric": measured.metric, "value": measured.accuracy, "split": measured.split,
                   **measured.quality}
        latency.update(measured.latency_ms, machine_note="measured where the pipeline ran")
    labels = targets if targets.ndim == 1 and np.issubdtype(targets.dtype, np.integer) else None
    return BundleSpec(task=ctx.task.name, preprocess=dict(ctx.data.info.preprocessing),
                      eval_inputs=inputs, labels=labels, quality=quality, latency=latency,
                      config_sha256=ctx.config_sha256, platform=cfg.platform,
                      fix_shapes=cfg.fix_shapes)


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
