"""``compress validate`` catches what the run would meet: a ``python:`` factory that does not
import (checked in a child process, so validate stays torch-free), a data factory without the
preprocessing the package stage ships, ``teacher.onnx`` naming a folder or a file whose external
data is missing; and the advice for a factory's image size names what really fixes it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _util import ROOT, write_config
from click.testing import CliRunner

from compress.cli import cli


def _python_data(ref: str, stages=None) -> dict:
    return {"version": 1, "name": "f", "device": "cpu",
            "data": {"source": "python", "python": ref},
            "teacher": {"arch": "resnet", "train": {"epochs": 1}}, "student": {"arch": "mobilenetv2"},
            "stages": stages or [{"distill": {"epochs": 1}}, {"export": {}}]}


def _validate(path, *cmd):
    return CliRunner().invoke(cli, [*(cmd or ("validate",)), str(path)])


def _factory(folder, body: str, name: str = "mydata") -> None:
    (folder / f"{name}.py").write_text(body)


def test_a_missing_factory_module_is_one_line_in_validate_and_pipeline(tmp_path):
    path = write_config(tmp_path, _python_data("mydata:make"))
    res = _validate(path)
    assert res.exit_code == 2
    line = (f"error: {path}:6 data.python: cannot import module 'mydata' (No module named "
            "'mydata')")
    assert res.stderr.strip() == line
    assert "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["pipeline", str(path), "--out", str(tmp_path / "run"),
                                   "--no-progress"])
    assert res.exit_code == 2
    assert res.stderr.strip() == line
    assert not (tmp_path / "run").exists()  # refused before the run starts


def test_a_missing_factory_function_and_a_broken_module_are_named(tmp_path):
    _factory(tmp_path, "def build():\n    return None\n")
    path = write_config(tmp_path, _python_data("mydata:make"))
    res = _validate(path)
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: {path}:6 data.python: 'mydata' has no function 'make'"
    _factory(tmp_path, "import nothing_here_at_all\n", name="broken")
    cfg = _python_data("mydata:build")
    cfg["teacher"] = {"python": "broken:make", "train": {"epochs": 1}}
    res = _validate(write_config(tmp_path, cfg))
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"error: {path}:8 teacher.python: cannot import module 'broken' "
                                  "(No module named 'nothing_here_at_all')")


def test_a_factory_without_preprocessing_is_refused_when_the_pipeline_packages(tmp_path):
    _factory(tmp_path, "def make():\n    return {'train': [1], 'val': [2]}\n")
    stages = [{"distill": {"epochs": 1}}, {"export": {}}, {"package": {}}]
    path = write_config(tmp_path, _python_data("mydata:make", stages))
    res = _validate(path)
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: {path}:4 data.preprocess: the package stage ships how a raw input becomes the "
        "model input, and mydata:make returns no preprocessing record: set data.preprocess "
        "(color, size, resize, scale, mean, std; see compress/config/preprocess.py), or return "
        "it from the factory as {'train': ..., 'val': ..., 'preprocess': ...}")
    # without a package stage nothing needs the record
    res = _validate(write_config(tmp_path, _python_data("mydata:make")))
    assert res.exit_code == 0, res.output
    # stated in the YAML, or returned by the factory: valid
    cfg = _python_data("mydata:make", stages)
    cfg["data"]["preprocess"] = {"color": "grayscale", "size": [8, 8], "resize": "stretch",
                                 "scale": 1 / 255, "mean": [0.5], "std": [0.5]}
    res = _validate(write_config(tmp_path, cfg))
    assert res.exit_code == 0, res.output
    _factory(tmp_path, "def make():\n    return {'train': [1], 'val': [2], 'preprocess': {}}\n",
             name="withrecord")
    res = _validate(write_config(tmp_path, _python_data("withrecord:make", stages)))
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"{tmp_path / 'pipe.yaml'}: valid (3 stages: distill, export, package)"


def test_validate_stays_torch_free_with_a_factory_that_imports_torch(tmp_path):
    _factory(tmp_path, "import torch\n\ndef make():\n    return None\n")
    path = write_config(tmp_path, _python_data("mydata:make"))
    probe = ("import sys\nfrom compress.cli import cli\ntry:\n"
             f"    cli(['validate', {str(path)!r}], prog_name='compress')\n"
             "except SystemExit as e:\n    print('CODE=' + str(e.code))\n"
             "print('TORCH=' + str('torch' in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert "CODE=0" in out.stdout, out.stderr
    assert "TORCH=False" in out.stdout


def _tiny_onnx(path, size: int = 28, external: bool = False):
    """A linear classifier over [N, 1, size, size] images, as ONNX (no torch needed)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((size * size, 10), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path), save_as_external_data=external,
                    all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=0)
    return path


def _onnx_teacher(src) -> dict:
    return {"version": 1, "name": "o", "device": "cpu", "data": {"image_size": 28},
            "teacher": {"onnx": str(src)}, "stages": [{"benchmark": {}}]}


def test_teacher_onnx_naming_a_folder_is_one_line(tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    _tiny_onnx(folder / "model.onnx")
    path = write_config(tmp_path, _onnx_teacher(folder))
    res = _validate(path)
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"error: {path}:7 teacher.onnx: {folder} is a folder; give the "
                                  ".onnx file (it holds model.onnx)")


def test_missing_external_data_is_named_by_validate(tmp_path):
    src = _tiny_onnx(tmp_path / "m.onnx", external=True)
    path = write_config(tmp_path, _onnx_teacher(src))
    assert _validate(path).exit_code == 0
    (tmp_path / "m.onnx.data").unlink()
    res = _validate(path)
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: {path}:7 teacher.onnx: {src} keeps its weights in external data, and "
        f"{tmp_path / 'm.onnx.data'} is missing: put it beside m.onnx (an ONNX export writes "
        "both files)")


@pytest.mark.parametrize("source", ["factory", "digits"])
def test_image_size_advice_names_what_resizes(tmp_path, source):
    import onnx

    from compress.export.teacher_io import DataShape, IOMismatch, check_fit, plan_io, ports

    graph = onnx.load(str(_tiny_onnx(tmp_path / "t.onnx"))).graph
    model_in, model_out = ports(graph)
    plan = plan_io(model_in, model_out, "classification", ("input",), ("logits",))
    with pytest.raises(IOMismatch) as e:
        check_fit(plan, model_in, model_out, "classification",
                  DataShape((1, 32, 32), size_settable=source == "digits"))
    fix = ("set data.image_size: 28" if source == "digits" else
           "a python: factory must return 28x28 images, npz arrays must hold them "
           "(data.image_size applies to the built-in sources only: digits, image_folder)")
    where = "data.image_size" if source == "digits" else "data"
    assert str(e.value) == (f"{where}: the teacher's input 'input' is [N, 1, 28, 28]; the data "
                            f"gives 32x32 images: {fix}")


def test_a_factory_of_other_sized_images_is_told_to_return_the_teachers_size(tmp_path):
    _factory(tmp_path, "import torch\nfrom torch.utils.data import TensorDataset\n\n"
                       "def make():\n"
                       "    g = torch.Generator().manual_seed(0)\n"
                       "    x, y = torch.rand(40, 1, 32, 32, generator=g), torch.arange(40) % 4\n"
                       "    return {'train': TensorDataset(x, y), 'val': TensorDataset(x, y)}\n",
             name="sized32")  # a name no other test's folder holds: the run imports in-process
    cfg = _onnx_teacher(_tiny_onnx(tmp_path / "t.onnx"))
    cfg["data"] = {"source": "python", "python": "sized32:make"}
    path = write_config(tmp_path, cfg)
    assert _validate(path).exit_code == 0  # the image size is known once the data loads
    res = CliRunner().invoke(cli, ["pipeline", str(path), "--out", str(tmp_path / "run"),
                                   "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.stderr.strip().splitlines()[-1] == (
        "error: data: the teacher's input 'input' is [N, 1, 28, 28]; the data gives 32x32 "
        "images: a python: factory must return 28x28 images, npz arrays must hold them "
        "(data.image_size applies to the built-in sources only: digits, image_folder)")
