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


def _tampered(src, folder):
    """``src`` with its reference logits moved by 0.5 and re-hashed: hashes hold, the check
    must fail."""
    from compress.common.files import sha256_file

    bundle = folder / "tampered"
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
    return bundle


def _on_aarch64(guest, runs, extra=()):
    """One guest process for every bundle: (precision, format) -> result, plus the extras."""
    keys = [(p, f) for p in ("fp32", "int8") for f in ("onnx", "ort")]
    folders = [runs[p] / "bundle" if f == "onnx" else arm64_check.deploy_ort(runs[p])
               for p, f in keys]
    results = arm64_check.check_bundles(guest, [*folders, *extra])
    # what ran, for the record (numbers only: nothing here is timed)
    log = folders[0].parents[1] / f"arm64-{folders[0].parent.name}.json"
    log.write_text(json.dumps({"guest": guest, "results": results}, indent=1) + "\n")
    return dict(zip(keys, results, strict=False)), results[len(keys):], dict(zip(keys, folders,
                                                                                  strict=True))


@pytest.fixture(scope="module")
def demo(guest, tmp_path_factory):
    runs = demo_runs(tmp_path_factory)
    bad = _tampered(runs["fp32"] / "bundle", tmp_path_factory.mktemp("arm64"))
    by_key, extra, folders = _on_aarch64(guest, runs, [bad])
    return runs, by_key, extra[0], folders


@pytest.fixture(scope="module")
def minilm(guest, tmp_path_factory):
    runs = minilm_runs(tmp_path_factory)
    by_key, _, folders = _on_aarch64(guest, runs)
    return runs, by_key, folders


def _assert_passed(by_key, folders):
    for (precision, fmt), r in by_key.items():
        manifest = json.loads((folders[precision, fmt] / "manifest.json").read_text())
        # the int8 run's model is "mixed" where the quantize stage kept sensitive layers float
        assert r["model"] == f"model.{fmt}" and r["precision"] in (
            (precision,) if precision == "fp32" else ("int8", "mixed"))
        assert r["exit"] == 0 and r["passed"], "\n".join(r["lines"])
        assert r["verified"] == f"verified  {len(manifest['files'])} files against " \
                                "manifest.json (sha256)"
        rows = r["result"]["check"]["rows"]
        assert rows and all(row["ok"] for row in rows)
        assert {row["output"] for row in rows} == {t["output"] for t in manifest["check"]["outputs"]}
        assert "latency_ms" not in r["result"]  # emulated time is never reported
        assert not any(ln.startswith("latency") for ln in r["lines"])


def _values(r):
    return {row["measure"]: row["value"] for row in r["result"]["check"]["rows"]}


def test_demo_cnn_fp32_and_arm64_int8_on_aarch64(guest, demo):
    runs, by_key, _, folders = demo
    assert guest["machine"] == "aarch64"
    _assert_passed(by_key, folders)
    report = json.loads((runs["int8"] / "report.json").read_text())
    final = next(m for m in report["models"] if m["name"] == report["final"])
    assert final["precision"] in ("int8", "mixed")
    assert '"target": "arm64"' in json.dumps(report)  # quantized with the arm64 preset
    for fmt in ("onnx", "ort"):
        assert _values(by_key["fp32", fmt])["argmax_agreement"] == 1.0
        assert _values(by_key["fp32", fmt])["max_abs_diff"] < 1e-3
        # on aarch64 int8 kernels, the 64 stored test samples score as the run's test split did
        assert abs(by_key["int8", fmt]["result"]["quality"]["accuracy"] - final["accuracy"]) <= 0.1


def test_minilm_student_fp32_and_int8_on_aarch64(minilm):
    _, by_key, folders = minilm
    _assert_passed(by_key, folders)
    for (precision, _fmt), r in by_key.items():
        assert _values(r)["cosine_min"] >= (0.9999 if precision == "fp32" else 0.95)


def test_a_bundle_outside_its_tolerance_fails_on_aarch64_saying_by_how_much(demo):
    r = demo[2]
    assert r["exit"] == 3 and not r["passed"]
    assert r["verified"].startswith("verified")  # hashes held: it is the check that failed
    failed = [row for row in r["result"]["check"]["rows"] if not row["ok"]]
    assert [row["measure"] for row in failed] == ["max_abs_diff"]
    assert failed[0]["by"] == pytest.approx(0.5 - failed[0]["limit"], abs=1e-3)
    assert any("outside the bundle's fp32 tolerance" in ln and "max_abs_diff by" in ln
               for ln in r["lines"])
