"""Built-in families, user factories and checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.errors import InputError
from compress.models.build import build_model, load_checkpoint_, model_summary
from compress.models.cnn import MobileNetV2


def test_resnet_teacher_size_matches_the_design():
    model = build_model({"arch": "resnet", "kwargs": {"width": 32, "depth": [2, 2, 2]}}, 1, 10, "teacher")
    summary = model_summary(model, torch.zeros(1, 1, 32, 32))
    assert summary["params"] == 696042
    assert 105e6 < summary["macs"] < 107e6
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_resnet_stem_stride_2_quarters_every_stage():
    spec = {"arch": "resnet", "kwargs": {"width": 8, "depth": [1, 1, 1]}}
    full = model_summary(build_model(spec, 1, 10, "student"), torch.zeros(1, 1, 32, 32))
    spec["kwargs"]["stem_stride"] = 2
    model = build_model(spec, 1, 10, "student")
    strided = model_summary(model, torch.zeros(1, 1, 32, 32))
    assert strided["params"] == full["params"] == 19810
    assert model.stem(torch.zeros(1, 1, 32, 32)).shape == (1, 8, 16, 16)
    # the stem itself runs at the output's resolution too, so the whole net is a quarter
    assert strided["macs"] * 4 == pytest.approx(full["macs"], rel=0.01)
    spec["kwargs"]["stem_stride"] = 3
    with pytest.raises(InputError) as e:
        build_model(spec, 1, 10, "student")
    assert str(e.value) == "student.kwargs: stem_stride must be 1 or 2 (got 3)"


def test_mobilenetv2_uses_depthwise_convs():
    model = MobileNetV2(3, 7, width_mult=0.5)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 8
    assert all(m.out_channels % 8 == 0 for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_python_factory_gets_its_kwargs(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def build(hidden=4):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))\n"
        "def not_a_model():\n"
        "    return 'x'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model({"python": "mymodels:build", "kwargs": {"hidden": 12}}, 1, 10, "teacher")
    assert model[1].out_features == 12
    with pytest.raises(InputError) as e:
        build_model({"python": "mymodels:not_a_model"}, 1, 10, "student")
    assert str(e.value) == "student.python: mymodels:not_a_model returned str, expected a torch.nn.Module"
    with pytest.raises(InputError) as e:
        build_model({"python": "mymodels:missing"}, 1, 10, "student")
    assert str(e.value) == "student.python: 'mymodels' has no callable 'missing'"


def test_bad_builtin_kwargs(tmp_path):
    with pytest.raises(InputError, match=r"^teacher.kwargs: .*unexpected keyword argument 'widht'"):
        build_model({"arch": "resnet", "kwargs": {"widht": 3}}, 1, 10, "teacher")


def test_checkpoint_key_mismatch_and_nested_state(tmp_path):
    model = nn.Linear(4, 2)
    torch.save({"state_dict": {"weight": torch.ones(2, 4), "bias": torch.zeros(2)}}, tmp_path / "ok.pt")
    load_checkpoint_(model, tmp_path / "ok.pt", "teacher.checkpoint")
    assert torch.equal(model.weight, torch.ones(2, 4))
    torch.save({"w": torch.ones(2, 4)}, tmp_path / "bad.pt")
    with pytest.raises(InputError) as e:
        load_checkpoint_(model, tmp_path / "bad.pt", "teacher.checkpoint")
    assert str(e.value) == (
        f"teacher.checkpoint: {tmp_path / 'bad.pt'} does not match the architecture: missing keys "
        "weight, bias; unexpected keys w"
    )


def test_pickled_module_is_refused(tmp_path):
    torch.save(nn.Linear(4, 2), tmp_path / "pickled.pt")  # a whole pickled module, not a state_dict
    with pytest.raises(InputError, match="not a safetensors file or a torch state_dict"):
        load_checkpoint_(nn.Linear(4, 2), tmp_path / "pickled.pt", "teacher.checkpoint")
