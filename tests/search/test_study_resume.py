"""A search killed with SIGKILL mid-trial continues from its study: the trials it finished are not
run again, the killed one is failed and queued again with its values, and the count adds up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from click.testing import CliRunner

from compress.cli import cli
from compress.search.loop import default_storage

S = optuna.trial.TrialState


def load_trials(storage: str, name: str = "tiny-search") -> dict[int, optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # not created yet
        return {}
    return {t.number: t for t in study.get_trials()}


def wait_for(check, proc: subprocess.Popen, log, seconds: float = 1800):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            pytest.fail(f"the search ended before it could be killed:\n{log.read_text()}")
        time.sleep(0.5)
    pytest.fail("timed out waiting for the search")


@pytest.mark.slow
def test_a_killed_search_resumes_without_rerunning_finished_trials(make_search, tmp_path):
    path = make_search({"space": {"student.kwargs.width": [2, 3, 4]}, "sampler": "grid",
                        "trials": 3, "probe": False, "constraints": {"max_accuracy_drop": 1.0}})
    out, log = tmp_path / "run", tmp_path / "first.log"
    storage = default_storage(out)
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "compress.cli", "search", str(path), "--out",
                                 str(out)], stdout=f, stderr=subprocess.STDOUT)
    states = lambda: {t.state for t in load_trials(storage).values()}  # noqa: E731
    wait_for(lambda: (out / "search" / "study.db").exists() and {S.COMPLETE, S.RUNNING} <= states(),
             proc, log)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = load_trials(storage)
    done = {n: t for n, t in before.items() if t.state == S.COMPLETE}
    killed = [n for n, t in before.items() if t.state == S.RUNNING]
    assert done and len(killed) == 1
    stamps = {n: (out / "search" / f"trial-{n:04d}" / "01-distill" / "stage.json").stat().st_mtime_ns
              for n in done}

    again = CliRunner().invoke(cli, ["search", str(path), "--out", str(out)])
    assert again.exit_code == 2  # without --resume a study with trials is refused
    assert "pass --resume to continue it" in again.output
    res = CliRunner().invoke(cli, ["search", str(path), "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert f"search: {len(done)} of 3 trials finished already" in res.output

    after = load_trials(storage)
    for n, t in done.items():  # finished trials were not run again
        assert after[n].state == S.COMPLETE and after[n].value == t.value
        stage = out / "search" / f"trial-{n:04d}" / "01-distill" / "stage.json"
        assert stage.stat().st_mtime_ns == stamps[n]
    dead = after[killed[0]]
    assert dead.state == S.FAIL
    retries = [t for t in after.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == S.COMPLETE
    assert retries[0].params == dead.params
    widths = sorted(t.params["student.kwargs.width"] for t in after.values() if t.state == S.COMPLETE)
    assert widths == [2, 3, 4]  # the count adds up: three finished, each grid point once
    record = json.loads((out / "search" / "search.json").read_text())
    assert record["counts"]["trials"] == 4 and record["counts"]["failed"] == 1
    assert record["counts"]["complete"] == 3
    assert json.loads((out / "report.json").read_text())["search"]["chosen"] in {
        n for n, t in after.items() if t.state == S.COMPLETE}
