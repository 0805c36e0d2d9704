"""SIGTERM (``kill``, a CI job's timeout) stops a run as Ctrl-C does: exit 143 with one line, the
report marked failed (reason terminated), the lock released, the step's temp folder removed and
the finished stages kept, so the same command resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from _util import ROOT, tiny_config, write_config
from click.testing import CliRunner

from compress.cli import cli
from compress.engine.run import TERMINATED


def test_sigterm_exits_143_writes_a_terminated_report_and_the_run_resumes(tmp_path):
    cfg = tiny_config()
    cfg["teacher"]["train"]["epochs"] = 1
    cfg["stages"][0]["distill"]["epochs"] = 40  # still distilling when the signal comes
    path, out = write_config(tmp_path, cfg), tmp_path / "run"
    cmd = [sys.executable, "-m", "compress.cli", "pipeline", str(path), "--out", str(out),
           "--no-progress"]
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:  # a file, not a pipe: nothing blocks on a full pipe
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 1800  # a busy machine trains the teacher slowly
        while "[01-distill] running" not in log_path.read_text() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / ".01-distill.tmp").is_dir(), log_path.read_text()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    output = log_path.read_text()
    assert proc.returncode == 143, f"exit {proc.returncode}:\n{output}"
    assert output.strip().splitlines()[-1] == ("error: terminated; finished stages are kept: run "
                                               "the same command to resume")
    assert "Traceback" not in output
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed"
    assert report["failure"] == {"reason": "terminated", "message": TERMINATED}
    assert [(s["dir"], s["status"]) for s in report["stages"]] == [("00-teacher", "done"),
                                                                  ("01-distill", "failed")]
    assert report["stages"][1]["error"] == TERMINATED
    assert not (out / ".lock").exists()
    assert list(out.glob(".*.tmp")) == []
    assert len(list((out / ".work").iterdir())) == 1  # the distill step's work folder, for resume
    # the same command picks up where it stopped: the teacher is kept
    res = CliRunner().invoke(cli, ["pipeline", str(path), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "[00-teacher] skipped (finished earlier, same config and inputs)" in res.output
    assert json.loads((out / "report.json").read_text())["status"] == "done"
