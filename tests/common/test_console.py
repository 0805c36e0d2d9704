"""Console output: plain lines (no carriage returns) off a terminal, a JSON-lines event log,
quiet mode."""

from __future__ import annotations

import io
import json

from compress.common.console import Console, _LineProgress


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal():
    out = io.StringIO()
    con = Console(stream=out)
    with con.progress(100, "distill") as bar:
        for i in range(100):
            bar.set_postfix(loss=1.0 / (i + 1), epoch=i // 10)
            bar.update()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # one line per 10% step (10% ... 90%) and the final line
    assert len(lines) == 10
    assert lines[0] == "distill: 10/100 (10%)  loss=0.1 epoch=0"
    assert lines[-1].startswith("distill: 100/100 (100%) done in ")
    assert lines[-1].endswith("s  loss=0.01 epoch=9")


def test_heartbeat_between_steps_is_rate_limited():
    out, clock = io.StringIO(), FakeClock()
    bar = _LineProgress(1000, "prune", out, interval=10.0, clock=clock)
    for _ in range(50):  # 5% of the work, 50 s: a heartbeat at 10, 20, 30, 40, 50 s
        clock.t += 1.0
        bar.update()
    bar.close()
    bar.close()  # a second close prints nothing
    lines = out.getvalue().splitlines()
    assert lines[:5] == [f"prune: {n}/1000 ({n // 10}%)" for n in (10, 20, 30, 40, 50)]
    assert lines[5] == "prune: 50/1000 (5%) done in 50.0s" and len(lines) == 6


def test_unknown_total_prints_a_final_line():
    out = io.StringIO()
    with Console(stream=out).progress(0, "calibrate") as bar:
        bar.update(7)
    assert out.getvalue().startswith("calibrate: 7 done in ")


def test_events_are_json_lines(tmp_path):
    log = tmp_path / "logs" / "events.jsonl"
    con = Console(json_path=log, stream=io.StringIO())
    con.event("stage_start", stage="01-distill", kind="distill")
    con.event("epoch", stage="01-distill", epoch=3, loss=0.25, val_accuracy=0.975)
    con.event("final_models", models=["teacher", "student-int8"], path=tmp_path)
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["event"] for r in rows] == ["stage_start", "epoch", "final_models"]
    assert rows[1] == {"ts": rows[1]["ts"], "event": "epoch", "stage": "01-distill", "epoch": 3,
                       "loss": 0.25, "val_accuracy": 0.975}
    assert rows[0]["ts"].endswith("+00:00") and "T" in rows[0]["ts"]
    assert rows[2]["models"] == ["teacher", "student-int8"] and rows[2]["path"] == str(tmp_path)


def test_quiet_prints_only_errors_and_the_summary(tmp_path):
    out = io.StringIO()
    con = Console(quiet=True, json_path=tmp_path / "e.jsonl", stream=out)
    con.info("[01-distill] running")
    with con.progress(10, "distill") as bar:
        for _ in range(10):
            bar.update()
    con.event("stage_end", stage="01-distill")
    assert out.getvalue() == ""
    con.error("error: stage prune: ratio too high")
    con.summary("final: student-int8")
    assert out.getvalue() == "error: stage prune: ratio too high\nfinal: student-int8\n"
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 1  # events still logged


def test_terminal_gets_a_redrawing_bar():
    out = FakeTTY()
    con = Console(stream=out)
    assert con.is_tty
    with con.progress(5, "export") as bar:
        for _ in range(5):
            bar.update()
    assert "\r" in out.getvalue() and "5/5" in out.getvalue()
