"""``student.width`` at validate time (torch-free): task causal-lm only, the kept fractions below
1, the rounding unit, at least one of ffn and heads, word for word."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from compress.cli import cli as main
from compress.config.pipeline import PipelineConfig


def _cfg(**student) -> dict:
    return {"version": 1, "name": "x", "task": "causal-lm",
            "data": {"source": "text", "corpus": ["wikitext2"]},
            "teacher": {"llm": "smollm2-135m-instruct"},
            "student": {"keep": 24, **student},
            "stages": [{"distill": {"teacher_topk": 32}}, {"export": {}}]}


def _validate(tmp_path, cfg: dict):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, CliRunner().invoke(main, ["validate", str(path)])


def test_a_width_student_keeps_a_fraction_rounded_to_32_by_default():
    student = PipelineConfig.model_validate(_cfg(width={"ffn": 0.75})).student
    assert (student.keep, student.width.ffn, student.width.round_to) == (24, 0.75, 32)
    assert PipelineConfig.model_validate(_cfg()).student.width is None
    width = PipelineConfig.model_validate(_cfg(width={"heads": 0.67})).student.width
    assert (width.ffn, width.heads) == (None, 0.67)


@pytest.mark.parametrize(("width", "message"), [
    ({"ffn": 1.5}, "student.width.ffn: must be < 1.0 (got 1.5)"),
    ({"ffn": 0}, "student.width.ffn: must be > 0.0 (got 0)"),
    ({"ffn": 0.5, "round_to": 0}, "student.width.round_to: must be > 0 (got 0)"),
    ({"heads": 1.0}, "student.width.heads: must be < 1.0 (got 1.0)"),
    ({"round_to": 32}, "student.width: give ffn (the kept fraction of the FFN width), heads, or "
     "both"),
])
def test_a_bad_width_is_one_line_at_exit_2(tmp_path, width, message):
    path, result = _validate(tmp_path, _cfg(width=width))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: {path}:") and line.split(" ", 2)[2] == message


def test_width_on_another_task_is_refused(tmp_path):
    cfg = {"version": 1, "name": "x", "teacher": {"arch": "resnet", "train": {"epochs": 1}},
           "student": {"arch": "resnet", "width": {"ffn": 0.5}},
           "stages": [{"distill": {}}, {"export": {}}]}
    path, result = _validate(tmp_path, cfg)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {path}:9 student.width: prunes the FFN of an llm "
                                     "teacher's decoder blocks, task causal-lm only (task is "
                                     "classification)")


def test_no_width_leaves_the_students_resume_key_as_it_was():
    assert PipelineConfig.model_validate(_cfg()).student.model_dump(mode="json") == {
        "arch": None, "python": None, "hf": None, "trust_remote_code": False, "kwargs": {},
        "checkpoint": None, "layers": None, "keep": 24}
    dumped = PipelineConfig.model_validate(_cfg(width={"ffn": 0.5})).student.model_dump()
    assert dumped["width"] == {"ffn": 0.5, "round_to": 32, "heads": None}
