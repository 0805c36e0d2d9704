"""The bundle's own runner on aarch64 (qemu user emulation, real aarch64 onnxruntime kernels):
hashes verified and the manifest's device check met, fp32 and int8, .onnx and .ort, for the demo
CNN and the MiniLM student (benchmarks/arm64_check.py; `make setup-arm64` fetches its parts)."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from _util import ROOT

from .device_runs import demo_runs, minilm_runs

pytestmark = pytest.mark.slow
sys.path.insert(0, str(ROOT / "benchmarks"))
import arm64_check  # noqa: E402


@pytest.fixture(scope="module")
def guest():
    try:
        return arm64_check.setup()
    except SystemExit as e:  # no registry reachable: the parts cannot be fetched here
        pytest.skip(f"aarch64 parts unavailable: {e}")


def _check_run(guest, run, precision):
    results = [arm64_check.check_bundle(guest, run / "bundle"),
               arm64_check.check_bundle(guest, arm64_check.deploy_ort(run))]
    for r, model in zip(results, ("model.onnx", "model.ort"), strict=True):
        manifest = json.loads((run / ("bundle" if model == "model.onnx" else
                                      "deploy/edge-arm64") / "manifest.json").read_text())
        assert r["model"] == model and r["precision"] == precision
        assert r["exit"] == 0 and r["passed"], "\n".join(r["lines"])
        assert r["verified"] == f"verified  {len(manifest['files'])} files against " \
                                "manifest.json (sha256)"
        rows = r["result"]["check"]["rows"]
        assert rows and all(row["ok"] for row in rows)
        assert {row["output"] for row in rows} == {t["output"] for t in manifest["check"]["outputs"]}
        assert "latency_ms" not in r["result"]  # emulated time is never reported
        assert not any(ln.startswith("latency") for ln in r["lines"])
    return results


def test_demo_cnn_fp32_and_arm64_int8_on_aarch64(guest, tmp_path_factory):
    runs = demo_runs(tmp_path_factory)
    assert guest["machine"] == "aarch64"
    fp32 = _check_run(guest, runs["fp32"], "fp32")
    int8 = _check_run(guest, runs["int8"], "int8")
    # fp32 kernels agree with x86 to float rounding; the int8 ones within the int8 tolerance
    for r in fp32:
        assert {row["measure"]: row["value"] for row in r["result"]["check"]["rows"]}[
            "argmax_agreement"] == 1.0
    report = json.loads((runs["int8"] / "report.json").read_text())
    quant = next(s for s in report["stages"] if s.get("kind", s.get("name", "")).endswith("quantize"))
    assert "arm64" in json.dumps(quant)
    assert all(r["result"]["quality"]["accuracy"] >= 0.8 for r in int8)


def test_minilm_student_fp32_and_int8_on_aarch64(guest, tmp_path_factory):
    runs = minilm_runs(tmp_path_factory)
    for precision in ("fp32", "int8"):
        for r in _check_run(guest, runs[precision], precision):
            cos = {row["measure"]: row["value"] for row in r["result"]["check"]["rows"]}
            assert cos["cosine_min"] >= (0.9999 if precision == "fp32" else 0.95)


def test_a_bundle_outside_its_tolerance_fails_on_aarch64_saying_by_how_much(
        guest, tmp_path_factory, tmp_path):
    """The same bundle with its reference logits moved: hashes hold, the check fails (exit 3)."""
    from compress.common.files import sha256_file

    src = demo_runs(tmp_path_factory)["fp32"] / "bundle"
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    with np.load(bundle / "eval.npz") as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k in arrays if k.startswith("expected__"))
    arrays[key] = arrays[key] + 0.5
    np.savez_compressed(bundle / "eval.npz", **arrays)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["eval.npz"] = {"sha256": sha256_file(bundle / "eval.npz"),
                                     "bytes": (bundle / "eval.npz").stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    r = arm64_check.check_bundle(guest, bundle)
    assert r["exit"] == 3 and not r["passed"]
    failed = [row for row in r["result"]["check"]["rows"] if not row["ok"]]
    assert [row["measure"] for row in failed] == ["max_abs_diff"]
    assert failed[0]["by"] == pytest.approx(0.5 - failed[0]["limit"], abs=1e-4)
    assert any("FAILED by" in ln for ln in r["lines"])
