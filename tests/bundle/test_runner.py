"""compress/bundle/runner.py on a bundle a real pipeline run wrote: torch-free, verifies hashes,
reads typed keys (a missing one is refused), preprocesses images of any size as preprocess.json
says, and checks eval.npz within the manifest's tolerance."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.bundle.conftest import ROOT, RUNNER


def _run(args: list, env: dict, module: bool = False) -> subprocess.CompletedProcess:
    head = ["-m", "compress.bundle.runner"] if module else [str(RUNNER)]
    return subprocess.run([sys.executable, *head, *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _session(bundle):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(bundle / "model.onnx"), so,
                                providers=["CPUExecutionProvider"])


def _classes(sess, x: np.ndarray) -> np.ndarray:
    return np.array([int(sess.run(None, {"input": x[i:i + 1]})[0].argmax())
                     for i in range(len(x))])


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


def test_eval_without_torch_checks_the_tolerance(pipeline_bundle, no_torch_env, tmp_path):
    out = tmp_path / "eval.json"
    r = _run([pipeline_bundle, "--eval", "--json", out], no_torch_env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((pipeline_bundle / "manifest.json").read_text())
    assert r.stdout.startswith(f"verified  {len(manifest['files'])} files against manifest.json "
                               "(sha256)\n")
    res = json.loads(out.read_text())
    with np.load(pipeline_bundle / "eval.npz") as z:
        want = float(np.mean(_classes(_session(pipeline_bundle), z["input"]) == z["labels"]))
    assert res["quality"]["accuracy"] == pytest.approx(want)
    assert res["check"]["passed"] and res["check"]["precision"] == "fp32"
    rows = {r["measure"]: r for r in res["check"]["rows"]}
    assert rows["argmax_agreement"]["value"] == 1.0 and rows["argmax_agreement"]["limit"] == 1.0
    assert rows["max_abs_diff"]["value"] <= rows["max_abs_diff"]["limit"] < 0.01
    assert "check     logits.max_abs_diff " in r.stdout and ": ok\n" in r.stdout
    assert res["latency_ms"]["n"] == 64 and res["latency_ms"]["p50"] > 0


def _rehash(bundle, name: str) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    data = (bundle / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    path.write_text(json.dumps(m))


def test_eval_outside_tolerance_says_by_how_much(bundle_copy, runner, capsys):
    with np.load(bundle_copy / "eval.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["expected__logits"] = arrays["expected__logits"].copy()
    arrays["expected__logits"][3] += 0.25  # a device 0.25 off on one sample
    np.savez_compressed(bundle_copy / "eval.npz", **arrays)
    _rehash(bundle_copy, "eval.npz")
    assert runner.main([str(bundle_copy), "--eval", "--json", str(bundle_copy / "r.json")]) == 3
    out, err = capsys.readouterr()
    limit = json.loads((bundle_copy / "manifest.json").read_text())["check"]["outputs"][0]
    row = next(r for r in json.loads((bundle_copy / "r.json").read_text())["check"]["rows"]
               if r["measure"] == "max_abs_diff")
    assert row["by"] == pytest.approx(0.25 - limit["max_abs_diff"], abs=1e-5) and not row["ok"]
    assert f"check     logits.max_abs_diff {row['value']:.6g} <= {limit['max_abs_diff']:.6g} " \
           f"(fp32): FAILED by {row['by']:.6g}\n" in out
    assert "check     logits.argmax_agreement 1 >= 1 (fp32): ok" in out
    assert err == f"error: outside the bundle's fp32 tolerance: logits.max_abs_diff by {row['by']:.6g}\n"


def _digit_pngs(digits_data, tmp_path):
    """The test split's raw 8x8 digits (0..16) as 8-bit images, and the pipeline's tensors."""
    from sklearn.datasets import load_digits

    from compress.data.images import digits

    full = digits(32)[0].numpy()
    index = {full[i].tobytes(): i for i in range(len(full))}
    xt, _ = digits_data.arrays("test")
    raw = load_digits().images[[index[x.tobytes()] for x in xt]]
    return np.round(raw / 16 * 255).astype(np.uint8), xt


@pytest.mark.parametrize("kind,least", [("native 8x8", 0.99), ("bilinear 64x64", 0.98),
                                        ("dark on light, bicubic 100x100", 0.95)])
def test_png_digits_get_the_pipelines_class(pipeline_bundle, digits_data, runner, tmp_path,
                                            kind, least):
    """Every test digit as a PNG (8x8 as scikit-learn holds it, or resized, or inverted like ink
    on paper): the runner's class agrees with the pipeline's own ORT evaluation of that test
    image; at native size the preprocessed pixels differ only by the PNG's 8-bit rounding."""
    from PIL import Image

    pngs, xt = _digit_pngs(digits_data, tmp_path)
    pre = json.loads((pipeline_bundle / "preprocess.json").read_text())
    xs = []
    for p in pngs:
        img = Image.fromarray(p, mode="L")
        if kind.startswith("bilinear"):
            img = img.resize((64, 64), Image.BILINEAR)
        elif kind.startswith("dark"):
            img = Image.fromarray(255 - np.asarray(img.resize((100, 100), Image.BICUBIC)), "L")
        img.save(tmp_path / "d.png")
        xs.append(runner.image_array(tmp_path / "d.png", pre))
    x = np.concatenate(xs)
    sess = _session(pipeline_bundle)
    agree = float(np.mean(_classes(sess, x) == _classes(sess, xt)))
    assert agree >= least, agree
    if kind.startswith("native"):
        assert np.max(np.abs(x - xt)) <= 2 / 255 / 2 + 1e-6  # half an 8-bit step, / std 0.5


def test_predict_command_on_pngs_and_photos_of_any_size(pipeline_bundle, digits_data, runner,
                                                        tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from compress.config.preprocess import ImagePreprocess
    from compress.data.images import apply_image

    pngs, xt = _digit_pngs(digits_data, tmp_path)
    Image.fromarray(pngs[7], mode="L").save(tmp_path / "digit.png")
    china, flower = load_sample_images().images
    assert china.shape == (427, 640, 3)
    Image.fromarray(china).save(tmp_path / "china.jpg")
    Image.fromarray(flower).resize((97, 211)).save(tmp_path / "flower.png")
    files = [tmp_path / n for n in ("digit.png", "china.jpg", "flower.png")]
    assert runner.main([str(pipeline_bundle), *map(str, files), "--json",
                        str(tmp_path / "p.json")]) == 0
    preds = json.loads((tmp_path / "p.json").read_text())["predictions"]
    pre = json.loads((pipeline_bundle / "preprocess.json").read_text())
    record = ImagePreprocess.model_validate(
        {k: v for k, v in pre.items() if k in ImagePreprocess.model_fields})
    sess = _session(pipeline_bundle)
    for f, pred in zip(files, preds, strict=True):
        x = runner.image_array(f, pre)
        with Image.open(f) as img:
            mine = apply_image(img, record)[None]  # the data side's copy of the rule
        assert x.shape == (1, 1, 32, 32) and np.max(np.abs(x - mine)) <= 1e-5
        assert pred["class"] == int(sess.run(None, {"input": mine})[0].argmax())
        assert pred["label"] == str(pred["class"])  # the digits source names its classes
    assert preds[0]["class"] == _classes(sess, xt[7:8])[0]
    out = capsys.readouterr().out
    assert out.endswith(f"flower.png\t{preds[2]['label']}\t{preds[2]['prob']:.4f}\n")


def test_python_dash_m_predicts(pipeline_bundle, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((20, 30), 200, np.uint8), mode="L").save(tmp_path / "a.png")
    r = _run([pipeline_bundle, tmp_path / "a.png"], {**os.environ}, module=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith(f"{tmp_path / 'a.png'}\t")


def _refusal(runner, bundle, capsys, *args) -> str:
    rc = runner.main([str(bundle), *(args or ["--eval"])])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    return err.strip()


def _edit_json(path, fn) -> None:
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


@pytest.mark.parametrize("section,key", [("runtime", "threads"), ("check", "precision"),
                                         ("eval", "file"), ("", "preprocess")])
def test_a_missing_manifest_key_is_refused(bundle_copy, runner, capsys, section, key):
    _edit_json(bundle_copy / "manifest.json",
               lambda m: (m[section] if section else m).pop(key))
    name = f"{section}.{key}" if section else key
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy / 'manifest.json'}: missing key {name!r}"


@pytest.mark.parametrize("key", ["scale", "size", "invert", "labels"])
def test_a_missing_preprocess_key_is_refused(bundle_copy, runner, capsys, tmp_path, key):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(tmp_path / "a.png")
    _edit_json(bundle_copy / "preprocess.json", lambda p: p.pop(key))
    _rehash(bundle_copy, "preprocess.json")
    assert _refusal(runner, bundle_copy, capsys, str(tmp_path / "a.png")) == \
        f"error: {bundle_copy / 'preprocess.json'}: missing key {key!r}"


def test_tampered_byte_names_the_file(bundle_copy, runner, capsys):
    f = bundle_copy / "model.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {f}: sha256 mismatch (file changed or corrupt)"


def test_tampered_bundle_exit_code_as_a_process(bundle_copy, no_torch_env):
    f = bundle_copy / "preprocess.json"
    f.write_text(f.read_text().replace('"invert": "auto"', '"invert": "never"'))
    r = _run([bundle_copy, "--eval"], no_torch_env)
    assert (r.returncode, r.stderr) == (2, f"error: {f}: sha256 mismatch (file changed or corrupt)\n")


@pytest.mark.parametrize("name", ["../outside.txt", "sub/../../outside.txt", "/etc/hostname"])
def test_manifest_path_leaving_the_bundle(bundle_copy, runner, capsys, name):
    (bundle_copy.parent / "outside.txt").write_text("x")
    _edit_json(bundle_copy / "manifest.json",
               lambda m: m["files"].update({name: {"sha256": "0" * 64, "bytes": 1}}))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy}/manifest.json: file path {name!r} leaves the bundle"


def test_symlink_pointing_outside(bundle_copy, runner, capsys):
    outside = bundle_copy.parent / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, bundle_copy / "notes.txt")
    _edit_json(bundle_copy / "manifest.json", lambda m: m["files"].update(
        {"notes.txt": {"sha256": hashlib.sha256(b"secret").hexdigest(), "bytes": 6}}))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy / 'notes.txt'}: resolves outside the bundle ({outside.resolve()})"


def test_missing_file(bundle_copy, runner, capsys):
    (bundle_copy / "model.ort").unlink()
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy / 'model.ort'}: missing (listed in manifest.json)"


def test_unknown_manifest_version(bundle_copy, runner, capsys):
    _edit_json(bundle_copy / "manifest.json", lambda m: m.update(manifest_version=1))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy / 'manifest.json'}: unknown manifest_version 1 (this runner reads 2)"


def test_used_file_without_hash(bundle_copy, runner, capsys):
    _edit_json(bundle_copy / "manifest.json", lambda m: m["files"].pop("eval.npz"))
    assert _refusal(runner, bundle_copy, capsys) == \
        f"error: {bundle_copy}/manifest.json: 'eval.npz' is used but has no sha256 entry"


def test_bench_json_is_a_compress_baseline(pipeline_bundle, runner, tmp_path, capsys):
    from compress.bench.baseline import load_baseline
    from compress.bench.reference import reference_sha256

    out = tmp_path / "base.json"
    assert runner.main([str(pipeline_bundle), "--bench", "--time", "1", "--json", str(out)]) == 0
    base = load_baseline(out)  # raises InputError unless compress reads it as a baseline
    assert base.reference["sha256"] == reference_sha256()
    assert base.inputs == {"input": {"dtype": "float32", "shape": [1, 1, 32, 32]}}
    assert base.settings.clock == "cpu" and base.settings.threads == 1
    assert base.normalized["low"] <= base.normalized["ratio"] <= base.normalized["high"]
    assert len(base.rounds.model_ms) == len(base.rounds.reference_ms) >= 2
    capsys.readouterr()


@pytest.mark.slow
def test_runner_in_a_plain_venv(pipeline_bundle, tmp_path):
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
    r = subprocess.run([str(py), str(RUNNER), str(pipeline_bundle), "--eval"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "logits.argmax_agreement 1" in r.stdout


def test_predict_refuses_mixed_inputs_text_for_an_image_model(pipeline_bundle, runner,
                                                              tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(tmp_path / "a.png")
    bundle = str(pipeline_bundle)
    assert runner.main([bundle, str(tmp_path / "a.png"), "some words"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "some words: not an image; give images or text, not both")
    assert runner.main([bundle, str(tmp_path / "nope.txt")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{tmp_path / 'nope.txt'}: no such text file (one sentence a line)")
    assert runner.main([bundle, "a sentence"]) == 2
    assert "this bundle's model takes images" in capsys.readouterr().err
