"""`compress bench` and `compress inspect`: exit codes and exact messages, through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compress.bench.reference import conv_mlp_model
from compress.cli import cli


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The ``compress`` group run as the console script runs it: exit code, stdout, stderr."""
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    tiny, big = folder / "tiny.onnx", folder / "big.onnx"
    onnx.save(conv_mlp_model(channels=4, size=8, convs=2), tiny)
    onnx.save(conv_mlp_model(channels=32, size=32, convs=4), big)  # ~40x the work of tiny
    return tiny, big


def test_plain_bench_json(models, tmp_path, capsys):
    tiny, _ = models
    code, out, err = run_cli(capsys, "bench", tiny, "--runs", "50", "--json", tmp_path / "r.json")
    assert (code, err) == (0, "")
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["runs"] == 50 and r["threads"] == 1 and r["opt_level"] == "all"
    assert r["inputs"] == {"x": {"dtype": "float32", "shape": [1, 4, 8, 8]}}
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    assert r["throughput_per_s"] == pytest.approx(1000 / lat["mean"], rel=1e-3)
    assert "(50 runs, wall clock)" in out and "session    created in" in out
    # a plain bench times on random values, and says so
    assert ("inputs     x float32[1, 4, 8, 8]  (seeded random values; --inputs FILE.npz for real "
            "ones)") in out


def test_npz_inputs_and_wrong_name(models, tmp_path, capsys):
    tiny, _ = models
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, x=np.ones((1, 4, 8, 8), np.float64))  # cast to the model's float32
    np.savez(bad, image=np.ones((1, 4, 8, 8), np.float32))
    code, out, _ = run_cli(capsys, "bench", tiny, "--runs", "10", "--inputs", good)
    assert code == 0 and f"x float32[1, 4, 8, 8]  (from {good})" in out
    code, _, err = run_cli(capsys, "bench", tiny, "--inputs", bad)
    assert (code, err) == (2, f"error: {bad}: no array named 'x' for model input 'x' (has: image)\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--runs", "5", "--time", "1"], "--runs and --time cannot be combined: pick one"),
    (["--vs", "M", "--baseline", "b.json"], "--vs and --baseline cannot be combined: pick one"),
    (["--baseline", "b.json", "--runs", "5"],
     "--runs applies to a plain bench; --baseline measures until a verdict, capped by --time"),
    (["--clock", "cpu", "--threads", "2"],
     "--clock cpu times only the calling thread: use it with --threads 1"),
    (["--dim", "batch"], "--dim 'batch': expected NAME=SIZE with SIZE a positive integer "
                         "(e.g. --dim batch=1 --dim sequence=128)"),
])
def test_bad_arguments_exit_2(models, capsys, args, message):
    tiny, _ = models
    args = [str(tiny) if a == "M" else a for a in args]
    code, out, err = run_cli(capsys, "bench", tiny, *args)
    assert (code, out, err) == (2, "", f"error: {message}\n")


def test_missing_and_non_onnx_files_exit_2(tmp_path, capsys):
    missing, empty, text = tmp_path / "nope.onnx", tmp_path / "empty.onnx", tmp_path / "t.onnx"
    empty.write_bytes(b"")
    text.write_text("hello\n")
    assert run_cli(capsys, "bench", missing) == (2, "", f"error: {missing}: no such file\n")
    assert run_cli(capsys, "inspect", missing) == (2, "", f"error: {missing}: no such file\n")
    assert run_cli(capsys, "bench", empty) == (
        2, "", f"error: {empty}: not an ONNX model (no graph nodes or opset)\n")
    code, out, err = run_cli(capsys, "bench", text)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {text}: not an ONNX model (") and err.count("\n") == 1


@pytest.mark.parametrize("name", ["model.json", "model.txt", "model.onnx"])
def test_inspect_refuses_a_non_onnx_file_whatever_its_extension(models, tmp_path, capsys, name):
    bad = tmp_path / name
    bad.write_text(json.dumps({"irVersion": 8, "graph": {"node": []}}))  # onnx reads .json as JSON
    code, out, err = run_cli(capsys, "inspect", bad)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {bad}: not an ONNX model (") and err.count("\n") == 1
    good = tmp_path / f"real-{name}"  # and a real model is read whatever its name
    good.write_bytes(models[0].read_bytes())
    code, out, _ = run_cli(capsys, "inspect", good)
    assert code == 0 and out.splitlines()[0].startswith("model ")


def test_vs_slower_exits_3_and_not_slower_exits_0(models, tmp_path, capsys):
    tiny, big = models
    code, out, err = run_cli(capsys, "bench", big, "--vs", tiny, "--time", "5",
                             "--json", tmp_path / "vs.json")
    assert code == 3
    assert err.startswith(f"error: latency regression: slower: {big} takes ")
    r = json.loads((tmp_path / "vs.json").read_text())
    assert r["verdict"] == "slower" and r["ci_low"] > 1.1 and r["ratio"] > 5
    assert r["rounds"] >= 20 and r["a"]["p50"] > r["b"]["p50"]
    code, out, err = run_cli(capsys, "bench", tiny, "--vs", big, "--time", "5")
    assert (code, err) == (0, "")
    assert f"not slower: {tiny} takes 0." in out and "machine: " in out


def test_inconclusive_warns_or_fails_with_strict(models, capsys):
    _, big = models
    # a verdict needs at least 1 s (min_seconds) of rounds: a 0.1 s cap is inconclusive anywhere
    code, out, err = run_cli(capsys, "bench", big, "--vs", big, "--time", "0.1")
    assert code == 0 and out.splitlines()[-1].startswith("inconclusive: ")
    assert err.startswith("warning: inconclusive: the interval still straddles 1 + tolerance")
    code, _, err = run_cli(capsys, "bench", big, "--vs", big, "--time", "0.1", "--strict")
    assert code == 3 and err.startswith("error: latency regression: inconclusive: ")


def test_save_baseline_then_check(models, tmp_path, capsys):
    tiny, _ = models
    b = tmp_path / "b.json"
    code, out, _ = run_cli(capsys, "bench", tiny, "--save-baseline", b, "--time", "3")
    assert code == 0 and out.splitlines()[-1] == f"saved      {b}"
    assert json.loads(b.read_text())["format"] == "compress-latency-baseline"
    # tiny runs in microseconds, so a loaded box can measure a 15% spread between processes
    # (seen here); a 2x tolerance keeps the interval off its edge there, so a verdict is sure
    code, out, err = run_cli(capsys, "bench", tiny, "--baseline", b, "--tolerance", "1.0",
                             "--time", "4")
    assert (code, err) == (0, "") and out.startswith(f"not slower: {tiny} is ")
    missing = tmp_path / "none.json"
    assert run_cli(capsys, "bench", tiny, "--baseline", missing) == (
        2, "", f"error: {missing}: baseline file not found (create it with "
               f"`compress bench MODEL.onnx --save-baseline {missing}`)\n")
    b.write_text(b.read_text()[:100])
    code, out, err = run_cli(capsys, "bench", tiny, "--baseline", b)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {b}: not a baseline file (invalid JSON: ")


def test_reference_and_processes_go_with_baselines(models, capsys):
    tiny, big = models
    assert run_cli(capsys, "bench", tiny, "--vs", big, "--reference", big) == (
        2, "", "error: --reference applies to --save-baseline and --baseline\n")
    assert run_cli(capsys, "bench", tiny, "--processes", "2") == (
        2, "", "error: --processes applies to --save-baseline and --baseline\n")


def test_inspect_counts_ops(models, capsys):
    tiny, _ = models
    code, out, _ = run_cli(capsys, "inspect", tiny)
    lines = out.splitlines()
    assert code == 0
    assert lines[2] == "inputs     x float32[1, 4, 8, 8]"
    assert lines[4] == "nodes      9: Relu 3, Conv 2, Gemm 2, GlobalAveragePool 1, Flatten 1"
    assert lines[5] == "quantized  none"
    # 2 convs of 4x4x3x3 + 4 biases, fc1 64x4 + 64, fc2 10x64 + 10
    assert lines[6] == f"params     {2 * (4 * 4 * 9 + 4) + 64 * 4 + 64 + 10 * 64 + 10:,} in initializers"


def test_inspect_detects_qdq(tmp_path, capsys):
    scale, zero = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(128), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
             helper.make_node("Relu", ["dq"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [scale, zero])
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, out, _ = run_cli(capsys, "inspect", path, "--json")
    info = json.loads(out)
    assert code == 0 and info["qdq"] is True and info["quantization"] == "qdq"
    assert info["ops"] == {"QuantizeLinear": 1, "DequantizeLinear": 1, "Relu": 1}
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["n", 3]}]
    assert info["opsets"] == {"ai.onnx": 17}
    code, out, _ = run_cli(capsys, "bench", path, "--runs", "5", "--dim", "n=7")
    assert code == 0 and "x float32[7, 3]" in out


def test_inference_failure_exits_1(tmp_path, capsys):
    # x[n, 3] reshaped to a fixed [2, 3]: loads fine, fails at run time unless n == 2
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "r",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [shape])
    path = tmp_path / "reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert run_cli(capsys, "bench", path, "--runs", "5", "--dim", "n=2")[0] == 0
    code, out, err = run_cli(capsys, "bench", path, "--runs", "5", "--dim", "n=5")
    assert (code, out) == (1, "")
    assert err.startswith("error: inference failed: ") and err.count("\n") == 1
