"""`python:` references import user code; a module beside the config imports without PYTHONPATH."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from compress.common import imports
from compress.errors import InputError


def test_a_module_in_an_added_folder_imports(tmp_path, monkeypatch):
    (tmp_path / "beside_cfg_factory.py").write_text("def build(n=2):\n    return list(range(n))\n")
    monkeypatch.setattr(imports, "_SEARCH", [])
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(InputError, match="data.python: cannot import module 'beside_cfg_factory'"):
        imports.import_callable("beside_cfg_factory:build", "data.python")
    imports.add_search_dir(tmp_path)
    assert imports.import_callable("beside_cfg_factory:build", "data.python")(n=3) == [0, 1, 2]
    with pytest.raises(InputError) as e:
        imports.import_callable("beside_cfg_factory:nope", "data.python")
    assert str(e.value) == "data.python: 'beside_cfg_factory' has no callable 'nope'"


FACTORY = '''
import numpy as np
import torch
from torch.utils.data import TensorDataset


def load(n=120):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = (rng.standard_normal((n, 1, 4, 4)) + (2 * y[:, None, None, None] - 1) * 3).astype(np.float32)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
'''


def _sign_classifier(path):
    """A fixed ONNX classifier: class 1 when the pixels' mean is positive."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.stack([-np.ones(16), np.ones(16)], 1).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_a_factory_beside_the_yaml_runs_without_pythonpath(tmp_path):
    import yaml

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_beside_data.py").write_text(FACTORY)
    _sign_classifier(folder / "sign.onnx")
    cfg = {"version": 1, "name": "beside", "seed": 0, "device": "cpu",
           "target": {"runs": 5, "warmup": 1},
           "data": {"source": "python", "python": "my_beside_data:load"},
           "teacher": {"onnx": "sign.onnx"}, "stages": [{"benchmark": {}}]}
    (folder / "pipe.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "run"
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-m", "compress.cli", "pipeline", "pipe.yaml", "--out",
                          str(out), "--no-progress"], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["models"][0]["accuracy"] > 0.9  # the factory's data, classified by the model
