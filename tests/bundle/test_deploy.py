"""compress deploy RUN_DIR --target: a per-target bundle with providers in order, CPU fallback."""

from __future__ import annotations

import json
import shutil

import click
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from compress.bundle.cli import register
from compress.bundle.deploy import PROVIDERS, target_names

TARGETS = ["android", "edge-arm64", "edge-x86", "ios"]


@pytest.fixture(scope="module")
def cli() -> click.Group:
    group = click.Group()
    register(group)
    return group


@pytest.fixture()
def run_dir(pipeline_bundle, tmp_path):
    shutil.copytree(pipeline_bundle, tmp_path / "run" / "bundle")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def deployed(cli, pipeline_bundle, tmp_path_factory) -> tuple:
    """One run dir (a real pipeline's bundle) with every device target deployed:
    ``(run_dir, {target: click result})``."""
    run = tmp_path_factory.mktemp("deployed")
    shutil.copytree(pipeline_bundle, run / "bundle")
    return run, {t: CliRunner().invoke(cli, ["deploy", str(run), "--target", t]) for t in TARGETS}


def test_target_profiles_exist():
    assert set(TARGETS) <= set(target_names())


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_writes_its_folder(deployed, runner, target, capsys):
    run_dir, results = deployed
    r = results[target]
    assert r.exit_code == 0, r.output
    out = run_dir / "deploy" / target
    m = json.loads((out / "manifest.json").read_text())
    prof = m["target"]["profile"]
    wanted = [PROVIDERS[p] for p in prof["providers"]]
    assert m["runtime"]["providers"] == wanted
    have = set(ort.get_available_providers())
    missing = [p for p in prof["providers"] if PROVIDERS[p] not in have]
    assert [n.split(" ")[0] for n in m["target"]["notices"]] == missing
    for short in missing:  # the wheel here is CPU-only: a plain notice, CPU fallback
        assert f"notice: {short} ({PROVIDERS[short]}) is not in this onnxruntime" in r.output
    assert m["runtime"]["model"] == ("model.onnx" if target == "edge-x86" else "model.ort")
    assert r.output.splitlines()[-1] == f"written    {out}"
    assert r.output.splitlines()[-2] == f"notes      {out / 'APP.md'} (generated from this manifest)"
    if m["runtime"]["model"] == "model.ort":
        assert m["model"]["ort_graph_ops"][0].startswith("ai.onnx:")
    # the target folder is itself a bundle: the runner verifies and evaluates it
    assert runner.main([str(out), "--eval", "--json", str(run_dir / "e.json")]) == 0
    res = json.loads((run_dir / "e.json").read_text())
    assert res["quality"]["logits.argmax_agreement"] == 1.0
    assert res["notices"] == [f"{p} is not in this onnxruntime build ({ort.__version__}); "
                              "falling back" for p in wanted if p not in have]
    capsys.readouterr()


def test_android_records_cpu_fallback(deployed):
    if "NnapiExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has NNAPI")
    m = json.loads((deployed[0] / "deploy" / "android" / "manifest.json").read_text())
    assert m["runtime"]["providers"] == ["XnnpackExecutionProvider", "NnapiExecutionProvider",
                                         "CPUExecutionProvider"]
    assert len(m["target"]["notices"]) == 2
    assert m["target"]["notices"][1].startswith(
        f"NNAPI (NnapiExecutionProvider) is not in this onnxruntime {ort.__version__} build")


def test_deploy_errors_are_one_line_exit_2(cli, run_dir, tmp_path):
    cases = [
        ([str(tmp_path / "nope"), "--target", "android"],
         f"error: {tmp_path / 'nope'}: no such run directory\n"),
        ([str(run_dir), "--target", "windows"],
         f"error: --target 'windows': unknown target (expected one of: "
         f"{', '.join(target_names())})\n"),
        ([str(tmp_path), "--target", "ios"],
         f"error: {tmp_path / 'bundle' / 'manifest.json'}: no bundle manifest (run the package "
         "stage first)\n"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(cli, ["deploy", *args])
        assert (r.exit_code, r.output) == (2, message)


def test_deploy_refuses_a_changed_bundle(cli, run_dir):
    f = run_dir / "bundle" / "model.onnx"
    f.write_bytes(f.read_bytes() + b"\0")
    r = CliRunner().invoke(cli, ["deploy", str(run_dir), "--target", "edge-x86"])
    assert (r.exit_code, r.output) == (
        2, f"error: {f}: missing or sha256 mismatch (the bundle was changed)\n")
    assert not (run_dir / "deploy" / "edge-x86").exists()


def test_deploy_refuses_a_malformed_manifest(cli, tmp_path):
    (tmp_path / "bundle").mkdir()
    manifest = tmp_path / "bundle" / "manifest.json"
    cases = [("[1, 2]", "expected a bundle manifest (a JSON object)"),
             ('{"manifest_version": 1, "files": {"model.onnx": "abc"}, "model": {}}',
              "unknown manifest_version 1 (expected 2)"),
             ('{"manifest_version": 2, "files": {}}', "missing key 'producer'")]
    for text, message in cases:
        manifest.write_text(text)
        r = CliRunner().invoke(cli, ["deploy", str(tmp_path), "--target", "ios"])
        assert (r.exit_code, r.output) == (2, f"error: {manifest}: {message}\n")
    assert not (tmp_path / "deploy").exists()


def test_deploy_refuses_a_manifest_missing_threads(cli, run_dir):
    """A dropped runtime.threads once became one thread on the device; now it is refused."""
    path = run_dir / "bundle" / "manifest.json"
    m = json.loads(path.read_text())
    del m["runtime"]["threads"]
    path.write_text(json.dumps(m))
    r = CliRunner().invoke(cli, ["deploy", str(run_dir), "--target", "android"])
    assert (r.exit_code, r.output) == (2, f"error: {path}: missing key 'runtime.threads'\n")


@pytest.mark.parametrize("target", TARGETS)
def test_app_notes_are_generated_from_the_targets_manifest(deployed, target):
    run_dir, _ = deployed
    out = run_dir / "deploy" / target
    m = json.loads((out / "manifest.json").read_text())
    pre = json.loads((out / "preprocess.json").read_text())
    notes = (out / "APP.md").read_text()
    assert m["files"]["APP.md"]["sha256"]  # hashed like every other file
    threads, name = m["runtime"]["threads"], m["io"]["inputs"][0]["name"]
    assert (threads, name, pre["scale"]) == (1, "input", 1 / 255)
    assert f"load `{m['runtime']['model']}`, {threads} intra-op thread(s)" in notes
    assert f"x = (p * 1/255 - mean) / std per channel, mean {pre['mean']}" in notes
    if target == "android":
        assert f'setIntraOpNumThreads({threads})' in notes and f'mapOf("{name}" to' in notes
        assert "longArrayOf(1, 1, 32, 32)" in notes and "swift" not in notes
    if target == "ios":
        assert f'withInputs: ["{name}": input]' in notes and "kotlin" not in notes


def test_an_onnx_target_keeps_the_bundles_ort_description(deployed):
    """edge-x86 ships model.onnx; the model.ort copied along stays described as the bundle built it."""
    run_dir, _ = deployed
    bundle = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    m = json.loads((run_dir / "deploy" / "edge-x86" / "manifest.json").read_text())
    assert m["runtime"]["model"] == "model.onnx"
    assert m["model"]["ort_platform"] == bundle["model"]["ort_platform"] == "arm"
