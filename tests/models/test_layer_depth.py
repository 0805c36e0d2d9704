"""Angular distances of decoder blocks against a hand computation, and depth-pruned copies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compress.errors import InputError
from compress.models.layer_depth import angular_distances, keep_layers, least_important
from tests._tiny_llama import tiny_llama


def _hand(h_in: np.ndarray, h_out: np.ndarray) -> float:
    cos = (h_in * h_out).sum(-1) / np.linalg.norm(h_in, axis=-1) / np.linalg.norm(h_out, axis=-1)
    return float(np.mean(np.arccos(np.clip(cos, -1, 1)) / math.pi))


def _identity_(layer) -> None:
    # a block whose attention and MLP write nothing leaves the residual stream unchanged
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def test_distances_match_hand_computation():
    model = tiny_llama(layers=4, init=0.3)
    _identity_(model.model.layers[2])
    ids = torch.randint(3, 97, (3, 9), generator=torch.Generator().manual_seed(0))
    got = angular_distances(model, ids, batch_size=2)
    with torch.no_grad():
        hs = [h.double().numpy() for h in model(ids, output_hidden_states=True).hidden_states]
    # hidden_states[i] is block i's input; the last entry is after the final norm, so block 3's
    # output is not in it: compare blocks 0-2 by hand
    for i in range(3):
        assert got[i] == pytest.approx(_hand(hs[i], hs[i + 1]), abs=1e-6)
    assert got[2] == pytest.approx(0.0, abs=1e-6)
    assert all(0 < d < 1 for d in (got[0], got[1], got[3]))
    assert least_important(got, 2)[0] == 2


def test_padding_is_not_counted():
    model = tiny_llama(layers=2, init=0.3)
    ids = torch.tensor([[5, 6, 7, 8]])
    alone = angular_distances(model, ids)
    padded = torch.tensor([[5, 6, 7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    assert angular_distances(model, padded, mask) == pytest.approx(alone, abs=1e-6)


def test_keep_layers_matches_a_model_built_with_those_blocks():
    model = tiny_llama(layers=4, init=0.5)
    student = keep_layers(model, [3, 0])
    assert student.config.num_hidden_layers == 2 and model.config.num_hidden_layers == 4
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight,
                       model.model.layers[3].mlp.up_proj.weight)
    # the same blocks in a freshly built 2-layer model give the same logits
    ref = tiny_llama(layers=2, init=0.5)
    ref.model.layers[0].load_state_dict(model.model.layers[0].state_dict())
    ref.model.layers[1].load_state_dict(model.model.layers[3].state_dict())
    ref.model.embed_tokens.load_state_dict(model.model.embed_tokens.state_dict())
    ids = torch.tensor([[4, 50, 8, 13]])
    with torch.no_grad():
        assert torch.allclose(student(ids).logits, ref(ids).logits, atol=1e-6)
    # and the KV cache works: greedy decoding with torch's cache equals full recomputation
    out = student.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                           do_sample=False, eos_token_id=None)
    seq = ids
    for _ in range(8):
        with torch.no_grad():
            nxt = student(seq).logits[0, -1].argmax()
        seq = torch.cat([seq, nxt.view(1, 1)], 1)
    assert out.tolist() == seq.tolist()


def test_layer_out_of_range_is_one_line():
    model = tiny_llama(layers=3)
    with pytest.raises(InputError) as e:
        keep_layers(model, [0, 3], where="student.keep_layers")
    assert str(e.value) == ("student.keep_layers: layer 3 is out of range "
                            "(the model has 3 layers, 0-2)")
    with pytest.raises(InputError, match=r"keep: give distinct layer indices"):
        keep_layers(model, [1, 1])
