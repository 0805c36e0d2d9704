"""Each stage seeds itself from the run's seed and its own name: a stage gives the same output
whether the stages before it ran in this run or were resumed from an earlier one. And files in
the run directory follow the user's umask, as open() would."""

from __future__ import annotations

import json
import os
import stat

from _util import tiny_config, write_config
from click.testing import CliRunner

from compress.cli import cli


def _run(cfg: dict, folder, out, *extra):
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(folder, cfg)), "--out", str(out),
                                   "--no-progress", *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "report.json").read_text())


def _stage(out, name: str) -> dict:
    return json.loads((out / name / "stage.json").read_text())


def test_resumed_run_equals_fresh_run_bit_for_bit(tmp_path):
    old = os.umask(0o022)
    try:
        first = tiny_config()
        _run(first, tmp_path, tmp_path / "resumed")  # trains the teacher, distills, ...
        second = tiny_config()
        second["stages"][0]["distill"]["lr"] = 0.02  # a new student; the teacher is resumed
        report = _run(second, tmp_path, tmp_path / "resumed")
        assert [s["status"] for s in report["stages"][:2]] == ["skipped", "done"]
        _run(second, tmp_path, tmp_path / "fresh", "--no-resume")
    finally:
        os.umask(old)
    for step in ("00-teacher", "01-distill", "02-export"):
        a, b = _stage(tmp_path / "resumed", step), _stage(tmp_path / "fresh", step)
        assert a["output"]["sha256"] == b["output"]["sha256"], step
        assert a["key"] == b["key"], step
    # the run directory is readable by others under umask 022 (a web server, an app build)
    for path in [tmp_path / "resumed" / "report.json", tmp_path / "resumed" / "02-export" / "model.onnx",
                 tmp_path / "resumed" / "01-distill" / "model.safetensors",
                 tmp_path / "resumed" / "01-distill" / "stage.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_atomic_write_follows_the_umask(tmp_path):
    from compress.common.files import write_text

    old = os.umask(0o077)
    try:
        write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_ctrl_c_exits_130_writes_an_interrupted_report_and_leaves_resume_intact(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from _util import ROOT

    from compress.engine.run import INTERRUPTED

    cfg = tiny_config()
    cfg["teacher"]["train"]["epochs"] = 1
    # interrupted after its first epoch's checkpoint: on an idle machine a tiny epoch takes ~0.2 s,
    # and 3 epochs could finish (and drop the checkpoint) between two polls
    cfg["stages"][0]["distill"]["epochs"] = 40
    path, out = write_config(tmp_path, cfg), tmp_path / "run"
    cmd = [sys.executable, "-m", "compress.cli", "pipeline", str(path), "--out", str(out),
           "--no-progress"]
    log = (tmp_path / "run.log").open("w")  # a file, not a pipe: nothing blocks on a full pipe
    # SIGINT back to its default in the child: a test runner that inherited an *ignored* SIGINT
    # passes that on through exec, and Python then never raises KeyboardInterrupt (in a full
    # `make test` the child ran to the end, exit 0, after the signal)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    deadline = time.monotonic() + 1800  # a busy machine trains the teacher slowly
    while not list(out.glob(".work/*/ckpt-distill.pt")) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)  # interrupted once the distillation has checkpointed its first epoch
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    log.close()
    output = (tmp_path / "run.log").read_text()
    assert proc.returncode == 130, f"exit {proc.returncode}:\n{output}"
    assert output.strip().splitlines()[-1] == "error: interrupted"
    assert "Traceback" not in output
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed"
    assert report["failure"] == {"reason": "interrupted", "message": INTERRUPTED}
    assert [(s["dir"], s["status"]) for s in report["stages"]] == [("00-teacher", "done"),
                                                                  ("01-distill", "failed")]
    assert report["stages"][1]["error"] == INTERRUPTED
    assert not (out / ".01-distill.tmp").exists() and not (out / ".lock").exists()
    # the same command picks up where it stopped: the teacher is kept, distillation resumes
    res = CliRunner().invoke(cli, ["pipeline", str(path), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "[00-teacher] skipped (finished earlier, same config and inputs)" in res.output
    assert "[distill] resumed from checkpoint at epoch " in res.output
    assert json.loads((out / "report.json").read_text())["status"] == "done"
