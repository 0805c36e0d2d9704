"""A brought ONNX classifier as users bring one: input ``image``, output ``scores``, 20 classes,
on data that holds three of them (labels 0, 7, 19). The student is distilled to the teacher's
20 classes, and the bundle ships the user's names: model.onnx, model.ort, manifest.json,
preprocess.json and the README's app snippets, and the runner's device check passes on them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest

from tests.bundle.conftest import run_pipeline

LABELS = (0, 7, 19)


def _digits_as_three_classes(path):
    """Digits 0, 1, 2 (8x8, 8-bit pixels) labelled 0, 7 and 19 of 20 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target < 3
    x = (d.images[keep] * 15).astype(np.uint8)[:, None]  # 0..240: 8-bit pixels, used as stored
    y = np.asarray(LABELS)[d.target[keep]]
    np.savez(path, x=x, y=y)
    return x.astype(np.float32), y


def _teacher(x, y, path):
    """A linear classifier over 20 classes, trained on the three held, exported as torch does
    for a user: input ``image``, output ``scores``."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 20))
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x) / 255, torch.from_numpy(y).long()
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(m(xt), yt).backward()
        opt.step()
    model = _Scaled(m).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["image"],
                          output_names=["scores"], dynamo=False, opset_version=17)
    return path


def _Scaled(m):
    """``m`` on pixels 0..255 (the npz is used as stored)."""
    from torch import nn

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, image):
            return self.m(image / 255)

    return Scaled()


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("names")
    x, y = _digits_as_three_classes(folder / "three.npz")
    onnx_path = _teacher(x, y, folder / "user.onnx")
    cfg = {"version": 1, "name": "names", "seed": 0, "device": "cpu",
           "target": {"runs": 10, "warmup": 1},
           "data": {"source": "npz", "path": str(folder / "three.npz"), "batch_size": 64},
           "teacher": {"onnx": str(onnx_path)},
           "student": {"arch": "resnet", "kwargs": {"width": 4, "depth": [1, 1, 1]}},
           "stages": [{"distill": {"epochs": 1, "lr": 0.01}}, {"export": {}}, {"package": {}}]}
    code, out = run_pipeline(folder, cfg)
    assert code == 0, out
    again, out = run_pipeline(folder, cfg)  # resumed: the count comes from the teacher again
    assert again == 0, out
    return folder / "run"


def _io(path):
    g = onnx.load(str(path)).graph
    inits = {i.name for i in g.initializer}
    return ([(v.name, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
             for v in g.input if v.name not in inits],
            [(v.name, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
             for v in g.output])


def test_the_student_scores_the_teachers_twenty_classes(named_run):
    from compress.common.ort import make_session

    report = json.loads((named_run / "report.json").read_text())
    assert [(s["name"], s["status"]) for s in report["stages"]] == [
        ("teacher", "skipped"), ("distill", "skipped"), ("export", "skipped"), ("package", "skipped")]

    # inside the run, every model takes and gives the task's names
    assert _io(named_run / "00-teacher" / "model.onnx")[1][0] == ("logits", [1, 20])
    student = named_run / "02-export" / "model.onnx"
    assert [name for name, _ in _io(student)[0]] == ["input"]
    sess = make_session(str(student), 1, "disable")
    (got,) = sess.run(None, {"input": np.zeros((1, 1, 8, 8), np.float32)})
    assert got.shape == (1, 20)


def test_the_bundle_ships_the_users_names(named_run, runner):
    import onnxruntime as ort

    bundle = named_run / "bundle"
    ins, outs = _io(bundle / "model.onnx")
    assert [n for n, _ in ins] == ["image"] and outs == [("scores", [1, 20])]
    sess = ort.InferenceSession(str(bundle / "model.ort"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == ["scores"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [i["name"] for i in manifest["io"]["inputs"]] == ["image"]
    assert [o["name"] for o in manifest["io"]["outputs"]] == ["scores"]
    assert [t["output"] for t in manifest["check"]["outputs"]] == ["scores"]
    pre = json.loads((bundle / "preprocess.json").read_text())
    assert pre["input"] == "image" and [o["name"] for o in pre["outputs"]] == ["scores"]
    arrays = np.load(bundle / "eval.npz")
    assert {"image", "expected__scores", "labels"} <= set(arrays.files)
    assert set(np.unique(arrays["labels"])) <= set(LABELS)
    readme = (bundle / "README.md").read_text()
    assert '"image" to input' in readme and 'out.get("scores")' in readme  # the Kotlin snippet
    assert '["image": input]' in readme and '["scores"]' in readme  # the Swift one
    assert "`input`" not in readme and "logits`" not in readme
    assert runner.main([str(bundle), "--eval"]) == 0


def test_a_model_without_an_onnx_teacher_ships_as_it_is(tmp_path, models):
    """A torch teacher (or an ONNX one already under the task's names) stamps nothing: the final
    model ships with the task's names, as before."""
    from types import SimpleNamespace

    from torch import nn

    from compress.artifacts import ModelArtifact
    from compress.data.images import digits_record
    from compress.export.shipped_names import UserNames
    from compress.stages.package import shipped_model

    final = ModelArtifact.from_onnx("student", models["fp32"])
    data = SimpleNamespace(info=SimpleNamespace(preprocess=digits_record(32)))
    for teacher in (ModelArtifact("teacher", "torch", module=nn.Linear(2, 2)),
                    ModelArtifact.from_onnx("teacher", models["fp32"]), None):
        ctx = SimpleNamespace(teacher=teacher, data=data)
        assert shipped_model(final, ctx, tmp_path) == (models["fp32"], UserNames())
