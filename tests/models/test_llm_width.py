"""Width pruning of a tiny random Llama (3 blocks, hidden 32, intermediate 64; a 6-head one with
3 KV groups for heads): the kept width, the importances against hand computations, the kept
channels and groups, the pruned model against the original with the dropped channels and heads
zeroed, the rebuild from the spec's widths, and the KV-cache export of the pruned student."""

from __future__ import annotations

import copy

import pytest
import torch

from compress.errors import InputError
from compress.models.llm_width import (
    ffn_importance,
    ffn_width,
    kv_group_count,
    kv_group_importance,
    prune_width_,
    shrink_ffn_,
    shrink_kv_groups_,
    top_channels,
)
from tests._tiny_llama import tiny_llama


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


@pytest.fixture(scope="module")
def gqa():
    """6 query heads over 3 KV heads (groups of 2), head dim 8."""
    return tiny_llama(seed=2, hidden=48, heads=6, kv_heads=3)


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    return torch.randint(0, 96, (5, 12), generator=torch.Generator().manual_seed(1))


def _hand_importance(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """|silu(x Wg^T) * (x Wu^T)| summed over tokens, from each MLP's input and its weights."""
    inputs = {}
    handles = [layer.mlp.register_forward_pre_hook(
        lambda m, args, i=i: inputs.setdefault(i, []).append(args[0].reshape(-1, 32)))
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        for row in ids:  # one window at a time: another batching than the code's
            model(input_ids=row[None], use_cache=False)
    for h in handles:
        h.remove()
    out = []
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            x = torch.cat(inputs[i]).double()
            gate = x @ layer.mlp.gate_proj.weight.double().T
            up = x @ layer.mlp.up_proj.weight.double().T
            out.append((gate * torch.sigmoid(gate) * up).abs().sum(0))
    return out


@pytest.mark.parametrize(("inter", "ffn", "round_to", "want"), [
    (1536, 0.75, 32, 1152),  # SmolLM2-135M's MLP: 36 x 32
    (1536, 0.7, 32, 1088),  # 1075.2 -> 33.6 units -> 34
    (64, 0.75, 16, 48),
    (64, 0.75, 32, 64),  # 1.5 units: halves go up
    (64, 0.1, 16, 16),  # never below one unit
])
def test_the_kept_width_is_the_fraction_rounded_to_a_multiple(inter, ffn, round_to, want):
    assert ffn_width(inter, ffn, round_to) == want


def test_the_importance_is_the_summed_absolute_activation_down_proj_reads(llama, windows):
    got = ffn_importance(llama, windows, batch_size=2)
    want = _hand_importance(llama, windows)
    assert len(got) == 3 and all(g.shape == (64,) for g in got)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, rtol=1e-5)
    # the kept channels are each block's highest by the hand computation
    kept = top_channels(got, 48)
    for k, w in zip(kept, want, strict=True):
        assert k == sorted(torch.argsort(w, descending=True)[:48].tolist())
        dropped = sorted(set(range(64)) - set(k))
        assert float(w[dropped].max()) < float(w[k].min())


def test_the_pruned_student_is_the_original_with_the_dropped_channels_zeroed(llama, windows):
    student = copy.deepcopy(llama)
    choice = prune_width_(student, windows, 0.75, round_to=16)
    assert (choice.intermediate_before, choice.intermediate_after) == (64, 48)
    assert student.config.intermediate_size == 48
    for layer in student.model.layers:
        mlp = layer.mlp
        assert (mlp.gate_proj.out_features, mlp.up_proj.out_features, mlp.down_proj.in_features,
                mlp.down_proj.out_features) == (48, 48, 48, 32)
    # 3 blocks x 3 matrices x 16 channels x 32 fewer weights
    assert choice.params_before - choice.params_after == 3 * 3 * 16 * 32
    assert choice.params_after == sum(p.numel() for p in student.parameters())
    assert choice.kept == top_channels(_hand_importance(llama, windows), 48)
    zeroed = copy.deepcopy(llama)
    with torch.no_grad():
        for layer, kept in zip(zeroed.model.layers, choice.kept, strict=True):
            dropped = sorted(set(range(64)) - set(kept))
            layer.mlp.gate_proj.weight[dropped] = 0
            layer.mlp.up_proj.weight[dropped] = 0
            layer.mlp.down_proj.weight[:, dropped] = 0
        got = student(input_ids=windows).logits
        want = zeroed(input_ids=windows).logits
        full = llama(input_ids=windows).logits
    assert float((got - want).abs().max()) < 1e-5
    assert float((got - full).abs().max()) > 1e-3  # the dropped channels did carry something


def test_a_student_rebuilt_from_its_width_loads_the_pruned_weights(llama, windows):
    student = copy.deepcopy(llama)
    prune_width_(student, windows, 0.5, round_to=16)
    rebuilt = shrink_ffn_(copy.deepcopy(llama), 32)
    rebuilt.load_state_dict(student.state_dict(), strict=True)
    assert rebuilt.config.intermediate_size == 32
    with torch.no_grad():
        diff = (rebuilt(input_ids=windows).logits - student(input_ids=windows).logits).abs().max()
    assert float(diff) == 0.0
    with pytest.raises(InputError) as e:
        shrink_ffn_(copy.deepcopy(llama), 80)
    assert str(e.value) == "width: 80 channels is out of range (the model has 64)"


def test_the_kv_cache_export_of_a_width_pruned_student_passes_parity(llama, windows, tmp_path):
    from compress.export.kv_cache import check_kv_parity, export_kv_decoder

    student = copy.deepcopy(llama)
    prune_width_(student, windows, 0.5, round_to=16)
    layout = export_kv_decoder(student, tmp_path / "decoder.onnx")
    assert (layout.num_layers, layout.num_kv_heads, layout.head_dim) == (3, 2, 8)
    parity = check_kv_parity(tmp_path / "decoder.onnx", student, windows[0].tolist(), steps=16)
    assert parity.max_abs_logit_diff <= 1e-4 and parity.tokens_equal


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def _hand_group_importance(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """Causal softmax attention written out per head from each block's input and weights:
    |output| summed over tokens, the group's 2 query heads and their 8 dims."""
    seen = {}
    handles = [layer.self_attn.register_forward_pre_hook(
        lambda m, args, kwargs, i=i: seen.setdefault(i, []).append(
            (kwargs.get("hidden_states", args[0] if args else None)[0],
             kwargs["position_embeddings"])), with_kwargs=True)
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        for row in ids:
            model(input_ids=row[None], use_cache=False)
    for h in handles:
        h.remove()
    out = []
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            a, total = layer.self_attn, torch.zeros(3, dtype=torch.float64)
            for x, (cos, sin) in seen[i]:
                t = x.shape[0]
                q = (x @ a.q_proj.weight.T).reshape(t, 6, 8).transpose(0, 1)
                k = (x @ a.k_proj.weight.T).reshape(t, 3, 8).transpose(0, 1)
                v = (x @ a.v_proj.weight.T).reshape(t, 3, 8).transpose(0, 1)
                q, k = _rotate(q, cos[0], sin[0]), _rotate(k, cos[0], sin[0])
                for h in range(6):
                    s = q[h] @ k[h // 2].T / 8 ** 0.5
                    s = s.masked_fill(torch.ones(t, t).triu(1).bool(), float("-inf"))
                    total[h // 2] += float((s.softmax(-1) @ v[h // 2]).abs().sum())
            out.append(total)
    return out


@pytest.mark.parametrize(("groups", "heads", "want"), [(3, 0.67, 2), (3, 0.5, 2), (3, 0.1, 1),
                                                       (4, 0.5, 2), (8, 0.3, 2)])
def test_the_kept_kv_groups_are_the_fraction_rounded_to_whole_groups(groups, heads, want):
    assert kv_group_count(groups, heads) == want


def test_a_kv_groups_importance_is_its_query_heads_summed_output(gqa, windows):
    got = kv_group_importance(gqa, windows, batch_size=2)
    want = _hand_group_importance(gqa, windows)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (3,) and torch.allclose(g, w, rtol=1e-4)
    assert top_channels(got, 2) == top_channels(want, 2)


def test_the_head_pruned_student_is_the_original_with_the_dropped_heads_zeroed(gqa, windows,
                                                                             tmp_path):
    from compress.export.kv_cache import check_kv_parity, export_kv_decoder

    student = copy.deepcopy(gqa)
    choice = prune_width_(student, windows, 0.5, round_to=16, heads=0.67)
    assert (choice.kv_heads_before, choice.kv_heads_after, choice.intermediate_after) == (3, 2, 32)
    cfg = student.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 8)
    for attn in (layer.self_attn for layer in student.model.layers):
        assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features,
                attn.o_proj.in_features) == (32, 16, 16, 32)
    assert choice.kept_groups == top_channels(_hand_group_importance(gqa, windows), 2)
    # FFN 3 x 3 x 32 x 48 and one KV group: 3 x (q 16 + k 8 + v 8 + o 16) x 48 fewer weights
    assert choice.params_before - choice.params_after == 3 * 3 * 32 * 48 + 3 * 48 * 48
    zeroed = copy.deepcopy(gqa)
    with torch.no_grad():
        for layer, kept, groups in zip(zeroed.model.layers, choice.kept, choice.kept_groups,
                                       strict=True):
            layer.mlp.down_proj.weight[:, sorted(set(range(64)) - set(kept))] = 0
            for g in sorted(set(range(3)) - set(groups)):
                layer.self_attn.o_proj.weight[:, g * 16:(g + 1) * 16] = 0
        diff = (student(input_ids=windows).logits - zeroed(input_ids=windows).logits).abs().max()
    assert float(diff) < 1e-5
    rebuilt = shrink_kv_groups_(shrink_ffn_(copy.deepcopy(gqa), 32), 2)
    rebuilt.load_state_dict(student.state_dict(), strict=True)
    layout = export_kv_decoder(rebuilt, tmp_path / "decoder.onnx")
    assert (layout.num_layers, layout.num_kv_heads, layout.head_dim) == (3, 2, 8)
    parity = check_kv_parity(tmp_path / "decoder.onnx", rebuilt, windows[1].tolist(), steps=16)
    assert parity.max_abs_logit_diff <= 1e-4 and parity.tokens_equal
