"""One run per run directory: a second run into the same directory refuses instead of both
writing. A lock left by a process that is gone is taken over."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from compress.errors import InputError


@dataclass(frozen=True)
class Holder:
    """The process that holds a run directory's lock (the lock file's JSON)."""

    pid: int
    host: str


class RunLock:
    """One run per run dir: a second run into the same directory refuses instead of both writing."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--out {self.path.parent}: cannot create the run directory ({e})") from e
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        tmp = self.path.with_name(f".lock.{os.getpid()}")
        tmp.write_text(holder)
        try:
            return self._acquire(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def _acquire(self, tmp: Path) -> RunLock:
        for _ in range(2):
            try:
                os.link(tmp, self.path)  # atomic, and the lock is never seen half-written
            except FileExistsError:
                holder = self._holder()
                if holder and _alive(holder.pid) and holder.host == socket.gethostname():
                    raise InputError(
                        f"{self.path.parent}: another compress run (pid {holder.pid}) is writing "
                        "to this run directory; wait for it to finish or pass --out DIR"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            return self
        raise InputError(f"{self.path}: cannot take the run-directory lock")

    def _holder(self) -> Holder | None:
        """Who holds the lock; None when the file is gone or not a holder's record."""
        try:
            data = json.loads(self.path.read_text())
            return Holder(int(data["pid"]), str(data["host"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
