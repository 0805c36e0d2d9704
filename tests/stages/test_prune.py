"""The prune stage: channel counts, output shapes and ONNX parity per architecture family, budget
targets (MACs, ORT latency) with their exit-3 message, recovery and the saved widths."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
import yaml
from _util import TASK
from click.testing import CliRunner
from pydantic import ValidationError
from torch import nn

from compress.bench.macs import onnx_macs
from compress.common.ort import make_session
from compress.config.stages import PruneConfig, TargetConfig
from compress.data.sources import DataConfig, load_data
from compress.errors import ConfigError, GateError
from compress.export.parity import outputs
from compress.export.torch_onnx import export_onnx
from compress.models.cnn import MobileNetV2, ResNet
from compress.report.render import trajectory_table
from compress.stages.prune import Recovery, count, prune_channels, prune_schedule_
from compress.train.loop import FitData, FitPlan, TrainConfig, evaluate_headline, fit_

QUICK = {"measure_latency": False}  # timing is covered by the latency tests below


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(source="digits", image_size=16, batch_size=64), seed=0)


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class CatNet(nn.Module):
    """Two branches joined by torch.cat: their pruned channels must line up in ``fuse``."""

    def __init__(self):
        super().__init__()
        self.a, self.b = _conv_bn(1, 16), _conv_bn(1, 16, k=1)
        self.fuse = _conv_bn(32, 32, stride=2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        y = self.fuse(torch.cat([self.a(x), self.b(x)], 1))
        return self.fc(y.mean((2, 3)))


class LinearHead(nn.Module):
    """A conv trunk flattened into a two-layer linear head (flatten couples channels x pixels)."""

    def __init__(self):
        super().__init__()
        self.conv = _conv_bn(1, 16, stride=4)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(self.conv(x), 1))))


def _widths(model: nn.Module) -> dict[str, tuple]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = (m.in_channels, m.out_channels, m.groups)
        elif isinstance(m, nn.Linear):
            out[name] = (m.in_features, m.out_features)
    return out


MOBILE_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2))
FAMILIES = {
    "resnet": (
        lambda: ResNet(1, 10, width=16, depth=(1, 1)),
        {"stem.0": (1, 8, 1), "stages.0.0.conv2": (8, 8, 1), "stages.1.0.conv1": (8, 16, 1),
         "stages.1.0.shortcut.0": (8, 16, 1), "fc": (16, 10)},
    ),
    "mobilenetv2": (
        lambda: MobileNetV2(1, 10, settings=MOBILE_SETTINGS, last_channels=64),
        {"features.0.0": (1, 16, 1), "features.1.block.0.0": (16, 16, 16),  # depthwise keeps groups == channels
         "features.1.block.1.0": (16, 8, 1), "features.2.block.0.0": (8, 48, 1),
         "features.2.block.1.0": (48, 48, 48), "features.3.block.1.0": (72, 72, 72),
         "features.3.block.2.0": (72, 8, 1),  # 24 * 0.5 = 12 rounds down to 8
         "features.4.0": (8, 32, 1), "classifier": (32, 10)},
    ),
    "concat": (
        CatNet,
        {"a.0": (1, 8, 1), "b.0": (1, 8, 1), "fuse.0": (16, 16, 1), "fc": (16, 10)},
    ),
    "linear_head": (
        LinearHead,
        {"conv.0": (1, 8, 1), "fc1": (8 * 16, 32), "fc2": (32, 10)},
    ),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_prunes_to_expected_widths_with_onnx_parity(family, digits, tmp_path):
    build, expected = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    x, _ = digits.arrays("val")
    example = torch.from_numpy(x[:1])
    macs0, _ = count(model, example)
    prune_channels(model, example, PruneConfig(ratio=0.5, **QUICK))
    widths = _widths(model)
    assert {k: widths[k] for k in expected} == expected
    assert model(torch.from_numpy(x[:5])).shape == (5, 10)
    assert count(model, example)[0] < 0.35 * macs0
    path = export_onnx(model, example, tmp_path / "m.onnx", exporter="torchscript")
    ref, got = outputs(model, path, {"input": x[:64]})
    assert len(got) == 64
    assert np.abs(ref - got).max() < 1e-4
    assert (ref.argmax(-1) == got.argmax(-1)).all()


def _tiny_bert():
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=32)
    return BertModel(cfg, add_pooling_layer=False).eval()


class _Encoder(nn.Module):
    """One tensor in, one tensor out, for the ONNX export."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).last_hidden_state


def test_bert_heads_and_ffn_pruned_with_onnx_parity(tmp_path):
    bert = _tiny_bert()
    ids = torch.randint(0, 120, (2, 12), generator=torch.Generator().manual_seed(0))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    prune_channels(bert, example, PruneConfig(ratio=0.5, **QUICK))
    for layer in bert.encoder.layer:
        att = layer.attention.self
        assert (att.num_attention_heads, att.attention_head_size, att.all_head_size) == (2, 16, 32)
        assert (att.query.out_features, layer.attention.output.dense.in_features) == (32, 32)
        assert layer.intermediate.dense.out_features == 64  # FFN 128 -> 64
        assert layer.output.dense.out_features == 64  # hidden size kept: it is the output
    out = bert(**example).last_hidden_state
    assert out.shape == (2, 12, 64)
    path = export_onnx(_Encoder(bert), ids, tmp_path / "bert.onnx", exporter="torchscript")
    sess = make_session(path, threads=1, opt_level="basic")
    got = sess.run(None, {sess.get_inputs()[0].name: ids.numpy()})[0]
    assert np.abs(got - out.detach().numpy()).max() < 1e-4


def test_l1_keeps_the_filters_with_the_largest_l1_norm(digits):
    torch.manual_seed(0)
    model = CatNet().eval()
    before = model.a[0].weight.detach().clone()
    prune_channels(model, digits.example(), PruneConfig(ratio=0.5, importance="l1", **QUICK))
    norms = before.abs().sum((1, 2, 3))
    keep = torch.sort(torch.topk(norms, 8).indices).values
    assert torch.equal(model.a[0].weight, before[keep])


def test_global_scope_cuts_the_least_important_layer_hardest(digits):
    torch.manual_seed(0)
    model = ResNet(1, 10, width=16, depth=(1, 1)).eval()
    with torch.no_grad():
        model.stages[1][0].conv1.weight.mul_(1e-3)  # one layer of tiny filters
    cfg = PruneConfig(ratio=0.3, scope="global", importance="l2", round_to=1, max_ratio=0.75, **QUICK)
    prune_channels(model, digits.example(), cfg)
    assert model.stages[1][0].conv1.out_channels == 8  # 32 -> 8: the max_ratio floor
    assert model.stem[0].out_channels == 16  # strong filters untouched


@pytest.mark.parametrize("importance", ["l2", "group_l2", "bn_scale", "taylor", "lamp", "random"])
def test_every_importance_prunes_to_the_same_widths(importance, digits):
    torch.manual_seed(0)
    model = ResNet(1, 10, width=16, depth=(1, 1)).eval()
    rec = Recovery(task=TASK, data=digits)  # taylor takes gradients on real batches
    cfg = PruneConfig(ratio=0.5, importance=importance, epochs=0, bn_batches=0, **QUICK)
    prune_channels(model, digits.example(), cfg, rec)
    assert _widths(model) == _widths(_pruned_reference(digits))


def _pruned_reference(digits):
    torch.manual_seed(0)
    ref = ResNet(1, 10, width=16, depth=(1, 1)).eval()
    return prune_channels(ref, digits.example(), PruneConfig(ratio=0.5, **QUICK))


def test_ignore_glob_keeps_a_layer_and_bad_glob_names_the_path(digits):
    torch.manual_seed(0)
    model = CatNet().eval()
    prune_channels(model, digits.example(), PruneConfig(ratio=0.5, ignore=["b.*"], **QUICK))
    assert (model.a[0].out_channels, model.b[0].out_channels, model.fuse[0].in_channels) == (8, 16, 24)
    with pytest.raises(ConfigError, match=re.escape(
        "stages[0].prune.ignore[0]: 'head*' matches no module (top-level modules: a, b, fuse, fc)"
    )):
        prune_channels(CatNet(), digits.example(), PruneConfig(ratio=0.5, ignore=["head*"]),
                       where="stages[0].prune")


def test_macs_target_stops_at_the_first_step_within_budget(digits):
    torch.manual_seed(0)
    model = ResNet(1, 10, width=16, depth=(1, 1)).eval()
    cfg = PruneConfig(macs=0.5, step_ratio=0.1, round_to=1, **QUICK)
    rows = prune_schedule_(model, digits.example(), cfg, Recovery()).trajectory
    budget = 0.5 * rows[0].macs
    assert rows[-1].macs <= budget < rows[-2].macs
    assert [r.ratio for r in rows] == pytest.approx([0.1 * i for i in range(len(rows))])
    with pytest.raises(GateError, match=r"prune\.macs: budget 1,000 MACs not reachable within max_ratio 0\.5: "
                                        r"lowest [\d,]+ MACs at ratio 0\.\d\d"):
        prune_channels(ResNet(1, 10, width=16, depth=(1, 1)), digits.example(),
                       PruneConfig(macs=1000, max_ratio=0.5, **QUICK))


class SamePadConv(nn.Conv2d):
    """A Conv2d subclass with its own forward, as EfficientNet ports write "same" padding: the
    hook counter of torch-pruning counts it as zero MACs."""

    def forward(self, x):
        return nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1)), self.weight, self.bias)


class SubclassNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = SamePadConv(1, 16, 3, padding=0), nn.BatchNorm2d(16)
        self.mid = SamePadConv(16, 16, 3, padding=0)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.mid(torch.relu(self.bn(self.conv(x)))).mean((2, 3)))


def test_macs_are_counted_on_the_onnx_graph(digits, tmp_path):
    """The budget, the trajectory and the report use one counter: MACs of the exported graph,
    which sees the subclassed convs torch-pruning's counter misses (16x16 input, by hand)."""
    from compress.models.build import model_summary

    model = SubclassNet().eval()
    example = digits.example()
    hand = 16 * 16 * 16 * 1 * 9 + 16 * 16 * 16 * 16 * 9 + 16 * 10  # conv, mid, fc
    assert count(model, example)[0] == hand
    assert model_summary(model, example)["macs"] < hand / 10  # the hook counter misses both convs
    rows = prune_schedule_(model, example, PruneConfig(macs=0.5, step_ratio=0.25, round_to=1, **QUICK),
                           Recovery()).trajectory
    assert rows[0].macs == hand and rows[-1].macs <= 0.5 * hand < rows[-2].macs
    pruned = onnx_macs(export_onnx(model, example, tmp_path / "p.onnx", exporter="torchscript")).total
    assert rows[-1].macs == pruned


def test_config_needs_exactly_one_target():
    for kwargs, text in (({}, "got none"), ({"ratio": 0.5, "macs": 0.5}, "got ratio, macs"),
                         ({"ratio": 0.9}, "ratio 0.9 is above max_ratio 0.8")):
        with pytest.raises(ValidationError, match=re.escape(text)):
            PruneConfig(**kwargs)


BENCH = TargetConfig(threads=1, opt_level="all", runs=60, warmup=5)


def test_latency_budget_is_met_or_stops_with_exit_3_message(digits, tmp_path):
    """Budget halfway between the unpruned and the 50%-pruned p50 (both timed in one run)."""
    torch.manual_seed(0)
    build = lambda: ResNet(1, 10, width=32, depth=(1, 1)).eval()  # noqa: E731
    example = torch.randn(1, 1, 32, 32)  # latency needs no real pixels; 32x32 lifts it off the ORT floor
    half = prune_schedule_(build(), example, PruneConfig(ratio=0.5), Recovery(target=BENCH)).trajectory
    unpruned = half[1].p50_ms * half[1].speedup  # timed interleaved with the pruned one
    budget = (unpruned + half[1].p50_ms) / 2
    cfg = PruneConfig(latency_ms=budget, step_ratio=0.1, max_ratio=0.5)
    try:
        outcome = prune_schedule_(build(), example, cfg, Recovery(target=BENCH))
    except GateError as e:  # noise on a shared machine can make it unreachable: then the message
        assert e.exit_code == 3
        assert re.fullmatch(rf"prune\.latency_ms: budget {budget:g} ms not reachable within max_ratio 0\.5: "
                            r"lowest p50 \d+\.\d{4} ms at ratio 0\.\d\d", str(e))
        return
    rows = outcome.trajectory
    assert rows[-1].p50_ms <= budget
    assert rows[-1].ratio <= 0.5
    assert all(r.p50_ms > budget for r in rows[:-1])  # stopped at the first step within budget
    assert [r.ratio for r in rows] == pytest.approx([0.1 * i for i in range(len(rows))])


def test_unreachable_latency_budget_raises_gate_error_with_lowest_latency(digits):
    model = ResNet(1, 10, width=8, depth=(1,)).eval()
    with pytest.raises(GateError) as err:
        prune_channels(model, digits.example(), PruneConfig(latency_ms=1e-4, step_ratio=0.25, max_ratio=0.5),
                       Recovery(target=BENCH))
    assert err.value.exit_code == 3
    assert re.fullmatch(r"prune\.latency_ms: budget 0\.0001 ms not reachable within max_ratio 0\.5: "
                        r"lowest p50 \d+\.\d{4} ms at ratio 0\.\d\d", str(err.value))


def test_recovery_trajectory_and_report_table(digits):
    torch.manual_seed(0)
    data = digits
    model = ResNet(1, 10, width=16, depth=(1, 1))
    fit_(model, TASK, FitData(data.train, data.val, 64),
         FitPlan(TrainConfig(epochs=3, lr=0.01), torch.device("cpu"), progress=False))
    teacher = copy.deepcopy(model)
    cfg = PruneConfig(ratio=0.5, steps=2, epochs=1, lr=0.005, **QUICK)
    outcome = prune_schedule_(model, data.example(), cfg, Recovery(task=TASK, data=data, teacher=teacher))
    rows = outcome.trajectory
    assert [r.ratio for r in rows] == [0.0, 0.25, 0.5]
    assert rows[0].acc_recovered == pytest.approx(evaluate_headline(TASK, teacher, data.val))
    assert rows[-1].acc_recovered == pytest.approx(evaluate_headline(TASK, model, data.val))
    assert rows[-1].acc_recovered > 0.7  # 1077 training images, one recovery epoch per step
    assert all(r.acc_recovered >= r.acc_bn for r in rows[1:])  # fit_ keeps the best epoch
    assert rows[-1].params == count(model, data.example())[1] < rows[0].params / 3
    table = trajectory_table(rows).splitlines()
    assert len(table) == 2 + 3
    assert table[-1].startswith(f"| 2 | 0.50 | {rows[-1].params:,} | {rows[-1].macs:,} | - | - |")


def test_pipeline_prune_stage_gate_exits_3(tmp_path, monkeypatch):
    from compress.cli import cli

    cfg = {
        "version": 1, "name": "tiny", "seed": 0, "device": "cpu",
        "data": {"source": "digits", "image_size": 16, "batch_size": 64},
        "teacher": {"arch": "resnet", "kwargs": {"width": 8, "depth": [1, 1]}, "train": {"epochs": 1}},
        "stages": [{"prune": {"latency_ms": 0.0001, "step_ratio": 0.5, "max_ratio": 0.5, "epochs": 0}},
                   {"export": {"exporter": "torchscript"}},  # also the teacher's: seconds faster
                   {"benchmark": {}}],
        "target": {"runs": 20, "warmup": 2},
    }
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = CliRunner().invoke(cli, ["pipeline", "p.yaml", "--out", "run"])
    assert res.exit_code == 3, res.output
    assert re.search(r"error: stages\[0\]\.prune\.latency_ms: budget 0\.0001 ms not reachable within "
                     r"max_ratio 0\.5: lowest p50 \d+\.\d{4} ms at ratio 0\.\d\d", res.output)
    # the failed run still writes its report, naming the failed stage
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "failed"
    assert [(st["kind"], st["status"]) for st in report["stages"]] == [("teacher", "done"), ("prune", "failed")]


def test_validate_names_the_yaml_path_of_a_double_target(tmp_path, monkeypatch):
    from compress.cli import cli

    text = """version: 1
name: t
teacher: {arch: resnet, kwargs: {width: 8}, train: {epochs: 1}}
stages:
  - prune:
      ratio: 0.5
      macs: 0.3
"""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(text)
    res = CliRunner().invoke(cli, ["validate", "p.yaml"])
    assert res.exit_code == 2
    assert res.output.strip().endswith(
        "p.yaml:5 stages[0].prune: set exactly one target of ratio, macs, latency_ms (got ratio, macs)"
    )
    assert "Traceback" not in res.output


def test_recovery_takes_its_fields_by_name_only():
    with pytest.raises(TypeError, match="positional"):
        Recovery(TASK)  # nine fields of one kind or another: a positional call misreads silently
    assert Recovery(seed=3).seed == 3
