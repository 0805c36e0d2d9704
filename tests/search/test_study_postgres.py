"""Two workers on one study in a real PostgreSQL server started by the test on 127.0.0.1: no trial
is run twice, and when one worker is killed its trial is failed and run again by the other."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import optuna
import pytest
from test_study_resume import load_trials, wait_for

S = optuna.trial.TrialState


def _binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _install() -> str | None:
    """Debian's postgresql package, when this test may install it (root with apt-get)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "not root, or no apt-get"
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True,
                       capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        return f"apt-get install -y postgresql failed ({type(e).__name__})"
    return None


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@pytest.fixture
def postgres():
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install .[postgres])")
    if _binary("initdb") is None:
        why = _install()
        if _binary("initdb") is None:
            pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not found, and they cannot be "
                        f"installed here: {why}")
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root with no 'postgres' or 'nobody' user to start the server as")
    base = tempfile.mkdtemp(prefix="compress-pg-")
    os.chmod(base, 0o755)
    data = os.path.join(base, "data")
    os.mkdir(data)
    if user:
        shutil.chown(base, user)
        shutil.chown(data, user)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_user([_binary("initdb"), "-D", data, "-U", "compress", "--auth=trust"], user),
                   check=True, capture_output=True, timeout=300)
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_user([_binary("pg_ctl"), "-D", data, "-o", opts, "-l",
                             os.path.join(base, "log"), "-w", "start"], user),
                   check=True, capture_output=True, timeout=300)
    try:
        yield f"postgresql://compress@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_user([_binary("pg_ctl"), "-D", data, "-m", "fast", "stop"], user),
                       capture_output=True, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _worker(path, out, url, log):
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "compress.cli", "search", str(path), "--out",
                                 str(out), "--storage", url, "--resume"],
                                stdout=f, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_workers_share_one_study_and_a_killed_workers_trial_is_rerun(make_search, tmp_path,
                                                                       postgres):
    path = make_search({"space": {"student.kwargs.width": [2, 3, 4, 5]}, "sampler": "grid",
                        "trials": 4, "probe": False, "constraints": {"max_accuracy_drop": 1.0},
                        "confirm": {"seeds": 0}})
    # the workers get the plain URL a user types; the test reads through psycopg2 directly
    reader = postgres.replace("postgresql://", "postgresql+psycopg2://")
    a = _worker(path, tmp_path / "a", postgres, tmp_path / "a.log")
    running = lambda pid: [t for t in load_trials(reader).values()  # noqa: E731
                           if t.state == S.RUNNING and t.user_attrs.get("worker", "").endswith(f":{pid}")]
    wait_for(lambda: running(a.pid), a, tmp_path / "a.log")
    b = _worker(path, tmp_path / "b", postgres, tmp_path / "b.log")
    wait_for(lambda: running(b.pid), b, tmp_path / "b.log")
    victim = running(b.pid)[0].number
    os.kill(b.pid, signal.SIGKILL)
    b.wait()
    assert a.wait(timeout=3600) == 0, (tmp_path / "a.log").read_text()

    trials = load_trials(reader)
    complete = [t for t in trials.values() if t.state == S.COMPLETE]
    widths = sorted(t.params["student.kwargs.width"] for t in complete)
    assert widths == [2, 3, 4, 5]  # no grid point twice, none lost
    assert trials[victim].state == S.FAIL
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == victim]
    assert len(retry) == 1 and retry[0].params == trials[victim].params
    assert retry[0].user_attrs["worker"].endswith(f":{a.pid}")
    for t in complete:  # every result is in the study and in the worker's run folder
        assert t.user_attrs["result"]["val_quality"] is not None
        owner = "a" if t.user_attrs["worker"].endswith(f":{a.pid}") else "b"
        assert (tmp_path / owner / "search" / f"trial-{t.number:04d}" / "val").is_dir()
