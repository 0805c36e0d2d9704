"""`compress deploy RUN_DIR --target web` in real headless chromium (Debian's, through the
DevTools protocol, served from 127.0.0.1): the page runs the manifest's device check on the eval
set with onnxruntime-web (WASM, 1 thread) and the bundle's preprocessing on raw inputs (PNG files
through the image rule, sentences through @huggingface/tokenizers), for the demo CNN and the
MiniLM student (slow tier; needs `make setup-web`); and, in the default tier, the eval arrays
the page reads and the refusal without the npm packages."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from _util import ROOT
from click.testing import CliRunner

from .device_runs import demo_runs, minilm_runs

sys.path.insert(0, str(ROOT / "benchmarks"))
import web_check  # noqa: E402


@pytest.fixture(scope="module")
def _web_setup():
    from compress.bundle.web import load_profile, vendor_files

    if shutil.which("chromium") is None or shutil.which("node") is None:
        pytest.skip("needs node and Debian's chromium (make setup-web)")
    vendor_files(load_profile())  # InputError naming `make setup-web` when the npm files lack


def _deploy(run):
    from compress.cli import cli

    res = CliRunner().invoke(cli, ["deploy", str(run), "--target", "web"])
    assert res.exit_code == 0, res.output
    return run / "deploy" / "web"


def _page(run, calls=0):
    web = _deploy(run)
    manifest = json.loads((web / "manifest.json").read_text())
    result = web_check.in_chromium(web, f"check=1&calls={calls}", timeout=600, cdp_calls=calls)
    assert "error" not in result, result
    return web, manifest, result


def _assert_check(result, manifest, precision):
    assert manifest["check"]["precision"] in ((precision,) if precision == "fp32"
                                              else ("int8", "mixed"))
    rows = result["check"]["rows"]
    assert result["passed"] and rows and all(r["ok"] for r in rows), rows
    assert {(r["output"], r["measure"]) for r in rows} == {
        (t["output"], k) for t in manifest["check"]["outputs"]
        for k in ("argmax_agreement", "max_abs_diff", "cosine_mean", "cosine_min")
        if t[k] is not None}
    assert result["samples"] == manifest["eval"]["samples"]
    assert result["crossOriginIsolated"] is False  # served plainly: 1 WASM thread


@pytest.mark.slow
def test_demo_cnn_in_chromium(_web_setup, tmp_path_factory):
    runs = demo_runs(tmp_path_factory)
    for precision in ("fp32", "int8"):
        web, manifest, r = _page(runs[precision], calls=50)
        _assert_check(r, manifest, precision)
        assert r["model"] == manifest["runtime"]["model"]
        assert "HeadlessChrome" in r["userAgent"] or "Chrome" in r["browser"]
        report = json.loads((runs[precision] / "report.json").read_text())
        final = next(m for m in report["models"] if m["name"] == report["final"])
        # the page's accuracy on the 64 stored test samples, beside the run's on the test split
        assert abs(r["quality"]["accuracy"] - final["accuracy"]) <= 0.1
        pre = r["preprocessing"]
        assert pre["kind"] == "image" and pre["samples"] == 8 and pre["size"] == [37, 45]
        assert pre["tensor_max_abs_diff"] <= 1e-5, pre  # the JS rule equals PIL's, float32
        assert pre["argmax_agreement"] == 1.0
        lat, cdp = r["latency_ms"], r["cdp_latency_ms"]
        assert lat["calls"] == 50 and lat["mean"] > 0  # real time: virtual time would read 0
        assert cdp["calls"] == 50 and 0 < cdp["thread_cpu_per_call"] <= cdp["wall_per_call"] * 1.5


@pytest.mark.slow
def test_minilm_student_in_chromium(_web_setup, tmp_path_factory):
    runs = minilm_runs(tmp_path_factory)
    for precision in ("fp32", "int8"):
        web, manifest, r = _page(runs[precision])
        _assert_check(r, manifest, precision)
        assert {"tokenizer.json", "vendor/tokenizers.min.mjs"} <= set(manifest["files"])
        pre = r["preprocessing"]
        assert pre["kind"] == "text" and pre["samples"] >= 6
        assert pre["same_ids"] == pre["samples"], pre  # JS tokenizer == Python tokenizers
        assert pre["cosine_min_to_reference"] >= (0.9999 if precision == "fp32" else 0.95)


def test_eval_bin_holds_eval_npz_byte_for_byte(bundles, tmp_path):
    from compress.bundle.web import write_eval

    bundle = bundles["int8"].path
    arrays = write_eval(bundle, bundles["int8"].manifest, tmp_path)
    index = json.loads((tmp_path / "eval.json").read_text())
    raw = (tmp_path / "eval.bin").read_bytes()
    with np.load(bundle / "eval.npz") as z:
        assert set(index["arrays"]) == set(z.files) == set(arrays)
        for name in z.files:
            a = index["arrays"][name]
            back = np.frombuffer(raw[a["offset"]:a["offset"] + a["bytes"]],
                                 dtype=np.dtype(a["dtype"]).newbyteorder("<")).reshape(a["shape"])
            assert np.array_equal(back, z[name]) and back.dtype == z[name].dtype
    assert index["samples"] == bundles["int8"].manifest["eval"]["samples"]


def test_web_deploy_without_the_npm_packages_says_how_to_get_them(bundles, tmp_path, monkeypatch):
    from compress.cli import cli

    run = bundles["fp32"].path.parent
    monkeypatch.setenv("COMPRESS_WEB_NODE_MODULES", str(tmp_path / "none"))
    res = CliRunner().invoke(cli, ["deploy", str(run), "--target", "web"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"error: {tmp_path / 'none' / 'onnxruntime-web'}: npm package onnxruntime-web 1.30.0 is "
        "needed (not installed); run `make setup-web` (or set COMPRESS_WEB_NODE_MODULES)"]
    assert not (run / "deploy" / "web").exists()
