"""One run per run directory: a second lock on the same directory is refused naming the holder;
a lock left by a process that is gone is taken over; the lock goes when the run ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from compress.engine.lock import RunLock
from compress.errors import InputError


def test_a_second_lock_on_the_same_dir_is_refused(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        holder = json.loads(lock.path.read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(InputError) as e, RunLock(tmp_path / "run"):
            pass
        assert str(e.value) == (
            f"{tmp_path / 'run'}: another compress run (pid {os.getpid()}) is writing to this run "
            "directory; wait for it to finish or pass --out DIR")
        assert lock.path.is_file()  # the refused second lock left the first in place
    assert not (tmp_path / "run" / ".lock").exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # no temp files left


def test_a_stale_lock_from_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # exited: nothing holds it now
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": 0}))
    with RunLock(run) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (run / ".lock").exists()


def test_a_half_written_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("{")  # a holder that died mid-write (cannot happen with link())
    with RunLock(run) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_run_dir_that_cannot_be_made_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InputError, match=r"^--out .*file/run: cannot create the run directory"):
        with RunLock(tmp_path / "file" / "run"):
            pass
