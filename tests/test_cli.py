"""The pipeline command's console: -q prints only the summary, --log-json writes structured events,
and progress off a terminal is plain lines (no carriage-return redraws)."""

from __future__ import annotations

import json

from _util import tiny_config, write_config
from click.testing import CliRunner

from compress.cli import cli


def test_quiet_run_prints_only_the_summary_and_logs_json_events(tmp_path):
    events = tmp_path / "events.jsonl"
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, tiny_config())), "--out",
                                   str(tmp_path / "run"), "-q", "--log-json", str(events)])
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines()[0].startswith("| model | stage |")  # the models table, nothing before
    assert res.stderr.strip().splitlines()[-1].startswith("report: ")
    assert "[00-teacher]" not in res.stderr and "\r" not in res.stderr
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds.count("stage_start") == 4 and kinds.count("stage_end") == 4
    assert kinds.count("epoch") == 3 + 1  # teacher 3 epochs, distill 1
    assert kinds[-1] == "final_models"
    final = json.loads(events.read_text().splitlines()[-1])
    assert final["final"] == "student" and [m["name"] for m in final["models"]] == ["teacher", "student"]


def test_progress_off_a_terminal_is_plain_lines(tmp_path):
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, tiny_config())), "--out",
                                   str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.stderr
    assert any(line.startswith("teacher: ") and "(100%) done in" in line for line in res.stderr.splitlines())


def test_a_bad_builtin_kwarg_exits_2_naming_it_and_keeps_the_teacher(tmp_path):
    # the student is built when distill starts: the trained teacher is kept, and the corrected
    # run resumes it
    cfg = tiny_config()
    cfg["student"]["kwargs"]["stem_stride"] = 3
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, cfg)), "--out", str(out), "-q"])
    assert (res.exit_code, res.stderr.strip()) == (2, "error: student.kwargs: stem_stride must be 1 or 2 (got 3)")
    assert "Traceback" not in res.output
    assert (out / "00-teacher" / "stage.json").is_file()
    cfg["student"]["kwargs"]["stem_stride"] = 2
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(tmp_path, cfg)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "[00-teacher] skipped" in res.stderr


def test_pipeline_validate_and_search_load_a_config_one_way(tmp_path):
    # one loader (compress/engine/load.py): the ONNX teacher's check, which `compress search`
    # skipped before, refuses the same file with the same line in all three commands
    bad = tmp_path / "teacher.onnx"
    bad.write_bytes(b"not a protobuf")
    cfg = {"version": 1, "name": "x", "device": "cpu", "data": {"image_size": 8},
           "teacher": {"onnx": str(bad)}, "stages": [{"benchmark": {}}],
           "search": {"space": {"target.threads": [1, 2]}, "constraints": {"max_accuracy_drop": 0.5}}}
    path = write_config(tmp_path, cfg)
    out = str(tmp_path / "run")
    for args in (["validate", str(path)], ["pipeline", str(path), "--out", out, "--no-progress"],
                 ["search", str(path), "--out", out]):
        res = CliRunner().invoke(cli, args)
        assert (res.exit_code, res.stderr.strip().splitlines()[-1]) == (
            2, f"error: teacher.onnx: {bad}: not a valid ONNX model (DecodeError)"), args
    assert not (tmp_path / "run").exists()  # refused before anything ran
