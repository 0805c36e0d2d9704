"""compress/bundle/runner.py: torch-free, verifies hashes, refuses tampered or escaping bundles."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.bundle.conftest import PREPROCESS, RUNNER


def _run(args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_runner_imports_no_torch_or_compress():
    tree = ast.parse(RUNNER.read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module.split(".")[0])
    assert mods == {"__future__", "argparse", "datetime", "hashlib", "json", "os", "platform",
                    "sys", "time", "pathlib", "numpy", "onnxruntime", "PIL", "tokenizers"}


def test_guard_blocks_torch(no_torch_env):
    r = subprocess.run([sys.executable, "-c", "import torch"], env=no_torch_env,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "blocked import of torch" in r.stderr


def test_eval_without_torch(bundles, models, no_torch_env, tmp_path):
    out = tmp_path / "eval.json"
    r = _run([bundles["fp32"].path, "--eval", "--json", out], no_torch_env)
    assert r.returncode == 0, r.stderr
    n = len(bundles["fp32"].manifest["files"])
    assert r.stdout.startswith(f"verified  {n} files against manifest.json (sha256)\n")
    res = json.loads(out.read_text())
    q = res["quality"]
    assert q["accuracy"] == pytest.approx(np.mean(models["torch_logits"].argmax(1) == models["y"]))
    assert q["logits.argmax_agreement"] == 1.0 and q["logits.max_abs_diff"] <= 1e-5
    assert res["latency_ms"]["n"] == 64 and res["latency_ms"]["p50"] > 0
    assert res["providers"] == ["CPUExecutionProvider"]


def test_predict_image_uses_preprocess(bundles, models, runner, tmp_path, capsys):
    from PIL import Image

    # one test digit back to 0..255 pixels, saved as a PNG
    pixels = ((models["x"][3, 0] * PREPROCESS["std"][0] + PREPROCESS["mean"][0]) * 255).round()
    pixels = pixels.astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "digit.png")
    rc = runner.main([str(bundles["fp32"].path), str(tmp_path / "digit.png"),
                      "--json", str(tmp_path / "p.json")])
    assert rc == 0
    pred = json.loads((tmp_path / "p.json").read_text())["predictions"][0]
    assert pred["class"] == int(models["torch_logits"][3].argmax())
    x = runner.image_array(tmp_path / "digit.png", PREPROCESS)
    want = (pixels / 255 - PREPROCESS["mean"][0]) / PREPROCESS["std"][0]
    assert x.shape == (1, 1, 32, 32) and np.max(np.abs(x[0, 0] - want)) <= 1e-6
    assert np.max(np.abs(x - models["x"][3:4])) <= 1 / 255 + 1e-6  # uint8 rounding only
    assert capsys.readouterr().out.endswith(f"digit.png\t{pred['label']}\t{pred['prob']:.4f}\n")


def _refusal(runner, bundle, capsys) -> str:
    rc = runner.main([str(bundle), "--eval"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    return err.strip()


def test_tampered_byte_names_the_file(bundle_copy, runner, capsys):
    f = bundle_copy / "model.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {f}: sha256 mismatch (file changed or corrupt)"


def test_tampered_bundle_exit_code_as_a_process(bundle_copy, no_torch_env):
    f = bundle_copy / "eval.npz"
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 0xFF]))
    r = _run([bundle_copy, "--eval"], no_torch_env)
    assert (r.returncode, r.stderr) == (2, f"error: {f}: sha256 mismatch (file changed or corrupt)\n")


def _edit_manifest(bundle, fn) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


@pytest.mark.parametrize("name", ["../outside.txt", "sub/../../outside.txt", "/etc/hostname"])
def test_manifest_path_leaving_the_bundle(bundle_copy, runner, capsys, name):
    (bundle_copy.parent / "outside.txt").write_text("x")
    _edit_manifest(bundle_copy, lambda m: m["files"].update({name: {"sha256": "0" * 64}}))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy}/manifest.json: file path {name!r} leaves the bundle"


def test_symlink_pointing_outside(bundle_copy, runner, capsys):
    outside = bundle_copy.parent / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, bundle_copy / "notes.txt")
    import hashlib

    _edit_manifest(bundle_copy, lambda m: m["files"].update(
        {"notes.txt": {"sha256": hashlib.sha256(b"secret").hexdigest(), "bytes": 6}}))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy / 'notes.txt'}: resolves outside the bundle ({outside.resolve()})"


def test_missing_file(bundle_copy, runner, capsys):
    (bundle_copy / "model.ort").unlink()
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy / 'model.ort'}: missing (listed in manifest.json)"


def test_unknown_manifest_version(bundle_copy, runner, capsys):
    _edit_manifest(bundle_copy, lambda m: m.update(manifest_version=2))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy / 'manifest.json'}: unknown manifest_version 2 (this runner reads 1)"


def test_used_file_without_hash(bundle_copy, runner, capsys):
    _edit_manifest(bundle_copy, lambda m: m["files"].pop("eval.npz"))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy}/manifest.json: 'eval.npz' is used but has no sha256 entry"


def test_bench_json_is_a_compress_baseline(bundles, runner, tmp_path, capsys):
    from compress.bench.baseline import load_baseline
    from compress.bench.reference import reference_sha256

    out = tmp_path / "base.json"
    assert runner.main([str(bundles["fp32"].path), "--bench", "--time", "1", "--json", str(out)]) == 0
    base = load_baseline(out)  # raises InputError unless compress reads it as a baseline
    assert base.reference["sha256"] == reference_sha256()
    assert base.inputs == {"image": {"dtype": "float32", "shape": [1, 1, 32, 32]}}
    assert base.settings.clock == "cpu" and base.settings.threads == 1
    assert base.normalized["low"] <= base.normalized["ratio"] <= base.normalized["high"]
    assert len(base.rounds.model_ms) == len(base.rounds.reference_ms) >= 2
    capsys.readouterr()


@pytest.mark.slow
def test_runner_in_a_plain_venv(bundles, tmp_path):
    """A venv with only onnxruntime, numpy and pillow (from pip's local cache, no torch)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "onnxruntime", "numpy",
                          "pillow"], capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        pytest.skip(f"pip install failed (offline?): {pip.stderr.strip().splitlines()[-1:]}")
    r = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert r.returncode == 1
    r = subprocess.run([str(py), str(RUNNER), str(bundles["fp32"].path), "--eval"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "logits.argmax_agreement 1" in r.stdout


def test_predict_refuses_mixed_inputs_and_a_missing_text_file(bundles, runner, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(tmp_path / "a.png")
    bundle = str(bundles["fp32"].path)
    assert runner.main([bundle, str(tmp_path / "a.png"), "some words"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "some words: not an image; give images or text, not both")
    assert runner.main([bundle, str(tmp_path / "nope.txt")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{tmp_path / 'nope.txt'}: no such text file (one sentence a line)")
