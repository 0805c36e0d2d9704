"""Deploy bundles: ONNX + ORT format model, preprocessing, eval samples, hashes, readiness."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from compress.bundle.mobile import check_readiness, readiness
from compress.bundle.writer import BundleResult, BundleSpec, write_bundle
from compress.config.stages import PackageConfig

__all__ = ["BundleResult", "BundleSpec", "PackageConfig", "check_readiness", "package",
           "readiness", "write_bundle"]


def package(model_path: Path, out_dir: Path, spec: BundleSpec, cfg: PackageConfig) -> BundleResult:
    """Write the bundle with ``cfg``'s platform, shape fix and first ``eval_samples`` samples,
    then apply its readiness gate (GateError, exit 3). The bundle stays on disk when the gate
    fails, for inspection."""
    n = cfg.eval_samples
    spec = replace(spec, platform=cfg.platform, fix_shapes=cfg.fix_shapes,
                   eval_inputs={k: v[:n] for k, v in spec.eval_inputs.items()},
                   expected={k: v[:n] for k, v in spec.expected.items()},
                   labels=None if spec.labels is None else spec.labels[:n])
    result = write_bundle(model_path, out_dir, spec)
    check_readiness(result.readiness, list(cfg.require), cfg.max_partitions)
    return result
