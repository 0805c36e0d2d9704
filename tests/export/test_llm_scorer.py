"""The LLM's prompt scoring in ONNX against torch: label log-probs within 1e-4, single- and
multi-token verbalisers, prompts of other lengths than the one traced; its dynamic int8 copy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tiny_llm import tiny_llama, tiny_tokenizer

from compress.errors import StageError
from compress.export.llm_scorer import (
    check_scorer_parity,
    export_prompt_scorer,
    ort_scores,
    quantize_scorer_int8,
    scorer_parity,
)
from compress.tasks.llm_labels import Prompt, PromptLabeller

TEXTS = ["the film was good", "bad", "the plot was not so great and the actors were awful",
         "a very very good movie", "it was a film"]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.mark.parametrize("verbalisers", [
    {"negative": " negative", "positive": " positive"},
    {"negative": " not good", "positive": " very good .", "neutral": " so"},
])
def test_onnx_scorer_matches_torch(model, tmp_path, verbalisers):
    lab = PromptLabeller(model, tiny_tokenizer(), Prompt("review : {text} sentiment ?", verbalisers))
    rows = lab.encode(TEXTS)
    path = export_prompt_scorer(model, lab.verbaliser_ids, tmp_path / "llm.onnx", rows[0])
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["label_logprobs"]
    assert model.config._attn_implementation == "sdpa"  # eager only while traced
    assert check_scorer_parity(path, model, lab.verbaliser_ids, rows) < 1e-4
    got = ort_scores(path, rows)
    assert got.shape == (len(TEXTS), len(verbalisers))
    assert np.abs(got - lab.score_ids(rows)).max() < 1e-4  # the labeller's padded batch too


@pytest.mark.parametrize(("mode", "op", "count"), [
    ("dynamic", "MatMulInteger", 15),  # every linear layer: 7 in each of 2 blocks, and the head
    ("weight-only", "MatMulNBits", 15),
])
def test_int8_copies_quantise_every_linear_layer_and_stay_close(model, tmp_path, mode, op, count):
    lab = PromptLabeller(model, tiny_tokenizer(),
                         Prompt("review : {text} sentiment ?", {"n": " negative", "p": " positive"}))
    rows = lab.encode(TEXTS)
    fp32 = export_prompt_scorer(model, lab.verbaliser_ids, tmp_path / "llm.onnx", rows[0])
    int8 = quantize_scorer_int8(fp32, tmp_path / "llm-int8.onnx", mode=mode)

    def ops(path, name):
        return sum(n.op_type == name for n in onnx.load(str(path)).graph.node)

    assert ops(int8, op) == count and ops(fp32, op) == 0 and ops(int8, "MatMul") == ops(fp32, "MatMul") - count
    diff = np.abs(ort_scores(int8, rows) - ort_scores(fp32, rows)).max()
    assert 0 < diff < 1.0  # quantised, yet the same scale of answer


def test_parity_failure_names_the_file(model, tmp_path):
    lab = PromptLabeller(model, tiny_tokenizer(),
                         Prompt("review : {text} sentiment ?", {"n": " negative", "p": " positive"}))
    rows = lab.encode(TEXTS[:2])
    path = export_prompt_scorer(model, lab.verbaliser_ids, tmp_path / "llm.onnx", rows[0])
    other = tiny_llama(seed=1)
    diff = scorer_parity(path, other, lab.verbaliser_ids, rows)
    with pytest.raises(StageError) as e:
        check_scorer_parity(path, other, lab.verbaliser_ids, rows)
    assert str(e.value) == (f"{path}: label log-probs differ from torch by {diff:.3g} "
                            "(allowed 0.0001) over 2 prompts")
