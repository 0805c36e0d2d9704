"""Pruned models round-trip through widths + state_dict (no pickle) with identical outputs."""

from __future__ import annotations

import json

import pytest
import torch

from compress.artifacts import ModelArtifact, load_torch, save_torch
from compress.config.stages import PruneConfig
from compress.errors import InputError
from compress.models.build import build_model
from compress.models.widths import apply_widths_, record_widths
from compress.stages.prune import prune_channels

QUICK = {"measure_latency": False}


@pytest.mark.parametrize(
    "spec",
    [
        {"arch": "resnet", "kwargs": {"width": 16, "depth": [1, 1]}},
        {"arch": "mobilenetv2", "kwargs": {"width_mult": 0.5, "last_channels": 64}},
    ],
)
def test_pruned_model_reloads_from_widths_and_state_dict(spec, tmp_path):
    torch.manual_seed(0)
    model = build_model(spec, 1, 10, "test").eval()
    x = torch.randn(4, 1, 16, 16)
    prune_channels(model, x[:1], PruneConfig(ratio=0.5, **QUICK))
    with torch.no_grad():  # non-trivial BN statistics, so a stale buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    art = ModelArtifact("m-pruned", "torch", model, {**spec, "widths": record_widths(model)})
    save_torch(art, tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["spec"]["widths"]["stem.0" if spec["arch"] == "resnet"
                                                                              else "features.0.0"]["out"] == 8
    loaded = load_torch(tmp_path, 1, 10).module
    assert record_widths(loaded) == record_widths(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bert_heads_round_trip():
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=32)
    torch.manual_seed(0)
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    ids = torch.randint(0, 120, (2, 10), generator=torch.Generator().manual_seed(1))
    prune_channels(bert, {"input_ids": ids}, PruneConfig(ratio=0.5, round_to=1, **QUICK))
    widths = json.loads(json.dumps(record_widths(bert)))  # what model.json stores
    assert widths["encoder.layer.1.attention.self"] == {
        "type": "attention", "num_attention_heads": 2, "attention_head_size": 16, "all_head_size": 32}
    fresh = apply_widths_(BertModel(cfg, add_pooling_layer=False), widths).eval()
    fresh.load_state_dict(bert.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).last_hidden_state, bert(input_ids=ids).last_hidden_state)


def test_widths_of_another_architecture_are_an_input_error():
    spec = {"arch": "resnet", "kwargs": {"width": 8, "depth": [1]}}
    widths = record_widths(build_model(spec, 1, 10, "t"))
    widths["head.0"] = {"type": "linear", "in": 4, "out": 10}
    with pytest.raises(InputError, match=r"^spec\.widths: names layer 'head\.0', which the model does not have$"):
        build_model({**spec, "widths": widths}, 1, 10, "t")
    widths.pop("head.0")
    widths["fc"] = {"type": "conv", "in": 8, "out": 10, "groups": 1}
    with pytest.raises(InputError, match=r"^spec\.widths: gives layer 'fc' as conv, the model has linear$"):
        build_model({**spec, "widths": widths}, 1, 10, "t")
