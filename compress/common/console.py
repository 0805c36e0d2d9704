"""Console output of the CLI: messages, progress and a JSON-lines event log.

In a terminal a progress bar redraws in place (tqdm). When the stream is not a terminal (CI logs,
files, pipes) it prints plain lines instead, at each 10% step and at most every ``interval``
seconds in between, then one final line; it never writes a carriage return, so logs stay readable.
``quiet`` keeps only errors and the final summary.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from compress.common.files import json_default


def _postfix_text(fields: dict[str, Any]) -> str:
    parts = []
    for k, v in fields.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


class Console:
    """Where the CLI talks to its user.

    Args:
        quiet: print nothing but errors (``error``) and the final summary (``summary``).
        json_path: append each ``event`` as one JSON line to this file (none: no event log).
        stream: where text goes; a terminal gets redrawing bars, anything else plain lines.
        interval: seconds between plain progress lines when no 10% step was crossed.
    """

    def __init__(self, quiet: bool = False, json_path: Path | None = None,
                 stream: TextIO | None = None, interval: float = 10.0):
        self.quiet = quiet
        self.json_path = Path(json_path) if json_path is not None else None
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        if self.json_path is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def is_tty(self) -> bool:
        """True when the stream is an interactive terminal."""
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except (OSError, ValueError):  # a closed or detached stream
            return False

    def _write(self, msg: str) -> None:
        self.stream.write(msg + "\n")
        self.stream.flush()

    def info(self, msg: str) -> None:
        """A progress message; silent when quiet."""
        if not self.quiet:
            self._write(msg)

    def error(self, msg: str) -> None:
        """An error: printed even when quiet."""
        self._write(msg)

    def summary(self, msg: str) -> None:
        """The final summary of a command: printed even when quiet."""
        self._write(msg)

    def event(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        """Append ``{"ts", "event": kind, **fields}`` as one JSON line to ``json_path``.

        Returns the record (also when there is no event log).
        """
        record = {"ts": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
                  "event": kind, **fields}
        if self.json_path is not None:
            line = json.dumps(record, default=partial(json_default, strict=False), allow_nan=True)
            # one write of one whole line in append mode: concurrent readers never see half a record
            with open(self.json_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        return record

    def progress(self, total: int, desc: str) -> Progress:
        """A progress bar of ``total`` steps; use as a context manager or call ``close()``."""
        if self.quiet:
            return Progress(total, desc)
        if self.is_tty:
            return _TqdmProgress(total, desc, self.stream)
        return _LineProgress(total, desc, self.stream, self.interval)


class Progress:
    """A progress bar that shows nothing (quiet mode); the base of the visible ones."""

    def __init__(self, total: int, desc: str):
        self.total = max(int(total), 0)
        self.desc = desc
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.closed = False

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps."""
        self.n += n

    def set_postfix(self, **kw: Any) -> None:
        """Values shown after the bar (loss, accuracy); replaces the previous ones."""
        self.postfix = dict(kw)

    def close(self) -> None:
        """Finish the bar; a second call does nothing."""
        self.closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TqdmProgress(Progress):
    def __init__(self, total: int, desc: str, stream: TextIO):
        super().__init__(total, desc)
        from tqdm import tqdm

        self._bar = tqdm(total=self.total or None, desc=desc, file=stream, dynamic_ncols=True,
                         leave=True)

    def update(self, n: int = 1) -> None:
        super().update(n)
        self._bar.update(n)

    def set_postfix(self, **kw: Any) -> None:
        super().set_postfix(**kw)
        self._bar.set_postfix(kw, refresh=True)

    def close(self) -> None:
        if not self.closed:
            self._bar.close()
        super().close()


class _LineProgress(Progress):
    """Plain lines for logs: each 10% step, a heartbeat every ``interval`` s, a final line."""

    def __init__(self, total: int, desc: str, stream: TextIO, interval: float,
                 clock: Any = time.monotonic):
        super().__init__(total, desc)
        self.stream, self.interval, self.clock = stream, interval, clock
        self.start = self.last_time = clock()
        self.last_decile = 0

    def _line(self, tail: str = "") -> None:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        post = _postfix_text(self.postfix)
        text = f"{self.desc}: {count}{pct}{tail}" + (f"  {post}" if post else "")
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        super().update(n)
        now = self.clock()
        decile = (10 * min(self.n, self.total)) // self.total if self.total else 0
        finished = self.total and self.n >= self.total
        if finished:
            return  # the final line comes from close()
        if decile > self.last_decile or now - self.last_time >= self.interval:
            self.last_decile = max(decile, self.last_decile)
            self.last_time = now
            self._line()

    def close(self) -> None:
        if not self.closed:
            self._line(f" done in {self.clock() - self.start:.1f}s")
        super().close()


_current: Console | None = None


def use(console: Console) -> Console:
    """Make ``console`` the one that training loops and stages report to."""
    global _current
    _current = console
    return console


def current() -> Console:
    """The console set by the CLI (a plain stderr one when nothing set it, e.g. in a notebook)."""
    return _current if _current is not None else use(Console())


def progress(total: int, desc: str, enabled: bool = True) -> Progress:
    """A bar on the current console, or a silent one when ``enabled`` is false."""
    return current().progress(total, desc) if enabled else Progress(total, desc)
