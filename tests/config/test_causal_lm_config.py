"""Task causal-lm at validate time (torch-free): the llm teacher without a prompt, the student
that keeps blocks, the token windows of the data, and the keys each side ignores, word for word."""

from __future__ import annotations

import pytest
from _util import config_error

from compress.config.pipeline import PipelineConfig, load_config


def _cfg(**over) -> dict:
    cfg = {"version": 1, "name": "x", "task": "causal-lm",
           "data": {"source": "text", "corpus": ["wikitext2"]},
           "teacher": {"llm": "smollm2-135m-instruct"},
           "student": {"keep": 24},
           "stages": [{"distill": {"teacher_topk": 32}}, {"export": {}}, {"quantize": {}},
                      {"benchmark": {}}, {"package": {}}]}
    cfg.update(over)
    return cfg


def test_a_causal_lm_config_gets_token_windows_and_the_teachers_tokenizer():
    cfg = PipelineConfig.model_validate(_cfg())
    assert cfg.data.tokenizer == "smollm2-135m-instruct"
    assert (cfg.data.lm.seq_len, cfg.data.lm.max_tokens, cfg.data.lm.test_tokens) == (256, 200_000,
                                                                                      16384)
    assert cfg.teacher.peers == ["int8", "int4"] and cfg.student.keep == 24
    quantize = cfg.stage_list()[2][1]
    assert (quantize.precisions, quantize.max_perplexity_ratio) == (["int8", "int4"], 1.05)
    # the generation keys at their defaults stay out of the resume keys of every task
    assert "precisions" not in quantize.model_dump() and "prompts" not in cfg.stage_list()[3][1].model_dump()
    assert PipelineConfig.model_validate(_cfg(student={"layers": [0, 5]})).student.layers == [0, 5]


def test_the_shipped_smollm_pipeline_validates():
    cfg, _ = load_config("pipelines/smollm-edge.yaml")
    assert cfg.task == "causal-lm" and cfg.student.keep == 24
    assert cfg.data.lm.max_tokens <= 300_000  # a CPU budget
    assert [k for k, _ in cfg.stage_list()] == ["distill", "export", "quantize", "benchmark",
                                                "package"]


@pytest.mark.parametrize(("over", "message"), [
    ({"student": {"keep": 24, "layers": [0, 1]}},
     "student: needs exactly one of 'arch', 'python', 'hf', 'layers' (a layer-drop copy of an hf "
     "teacher) or 'keep' (task causal-lm)"),
    ({"student": {"arch": "resnet"}},
     "student: a causal-lm student keeps decoder blocks of the teacher: give layers: [..] or keep: N"),
    ({"student": {"layers": [0, 0]}},
     "student.layers: give distinct layer indices, at least one (got [0, 0])"),
    ({"teacher": {"llm": "smollm2-135m-instruct", "calibrate": False}},
     "teacher.calibrate: task causal-lm distils the llm's next-token distribution; it takes no "
     "prompt, calibration or labelling keys"),
    ({"data": {"source": "digits"}},
     "data.source: task causal-lm reads text (got digits)"),
    ({"data": {"source": "text", "labels": "movie-reviews"}},
     "data.labels: task causal-lm trains on running text: no labelled, probe or held-out sets"),
])
def test_what_a_causal_lm_pipeline_refuses(tmp_path, over, message):
    assert config_error(tmp_path, _cfg(**over)) == message


def test_keys_that_the_other_side_ignores_are_refused(tmp_path):
    cfg = _cfg()
    cfg["stages"][2] = {"quantize": {"mode": "dynamic"}}
    assert config_error(tmp_path, cfg) == (
        "stages[2].quantize.mode: task causal-lm ignores this key (a causal LM is quantized, "
        "exported and measured as a KV-cache decoder: quantize.precisions and "
        "max_perplexity_ratio decide); remove it")
    cfg["stages"][2] = {"quantize": {}}
    cfg["stages"][1] = {"export": {"seq_len": 64}}
    assert config_error(tmp_path, cfg) == (
        "stages[1].export.seq_len: task causal-lm ignores this key (its windows are "
        "data.lm.seq_len long; the KV-cache graph takes any length); remove it")
    other = {"version": 1, "name": "x", "teacher": {"arch": "resnet", "train": {"epochs": 1}},
             "stages": [{"export": {}}, {"quantize": {"precisions": ["int4"]}}]}
    assert config_error(tmp_path, other) == (
        "stages[1].quantize.precisions: task classification ignores this key (it is no causal "
        "LM (task: causal-lm reads it)); remove it")
    assert config_error(tmp_path, {**other, "student": {"keep": 2}}) == (
        "student.keep: keeps decoder blocks of an llm teacher of task causal-lm (task is "
        "classification); give layers")
    assert config_error(tmp_path, {**other, "stages": [{"export": {}}], "teacher": {
        "arch": "resnet", "train": {"epochs": 1}, "peers": ["int4"]}}) == (
        "teacher.peers: a key of an llm teacher of task causal-lm")
