"""The demo's speedup (teacher p50 / final model p50) on a busy machine, wall clock vs the calling
thread's CPU clock.

Three back-to-back measurements per clock, each timed the way the benchmark stage times (1 ORT
thread, interleaved blocks, the run's target: runs and warm-up), while busy-loop processes load
the cores. The CPU clock leaves out the time the OS had the thread preempted, so the ratio holds;
wall time counts it, so it swings with the load.

    python benchmarks/busy_machine_ratio.py runs/digits-mobile [--busy N] [--runs 300]

Inputs are seeded random values of each model's input shape (latency of these graphs does not
depend on the values; the benchmark stage itself times on a test-split sample).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BUSY = "while True:\n    pass\n"


def measure(teacher: Path, final: Path, clock: str, runs: int, warmup: int) -> tuple[float, float, float]:
    """``(teacher p50, final p50, ratio)`` in one interleaved measurement."""
    from compress.bench.latency import measure_interleaved, random_feeds
    from compress.common.ort import make_session

    feeds = [random_feeds(make_session(p, 1, "all")) for p in (teacher, final)]
    t, f = measure_interleaved([teacher, final], feeds, 1, "all", runs, warmup, clock=clock)
    return t.stats.p50, f.stats.p50, t.stats.p50 / f.stats.p50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="?", default=Path("runs/digits-mobile"))
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 1,
                    help="busy-loop processes loading the machine (default: one per core)")
    ap.add_argument("--runs", type=int, default=None, help="runs per model (default: the run's)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()
    report = json.loads((args.run_dir / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    teacher, final = (args.run_dir / models[n]["path"] for n in ("teacher", report["final"]))
    runs = args.runs or models["teacher"]["runs"]
    loaders = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
    out: dict[str, list] = {}
    try:
        for clock in ("wall", "cpu"):
            out[clock] = [measure(teacher, final, clock, runs, 20) for _ in range(3)]
    finally:
        for p in loaders:
            p.kill()
            p.wait()
    print(f"teacher {teacher}  final {report['final']} {final}  {runs} runs each, "
          f"{args.busy} busy-loop process(es), {os.cpu_count()} cores")
    summary = {}
    for clock, rows in out.items():
        ratios = [r[2] for r in rows]
        spread = (max(ratios) - min(ratios)) / min(ratios)
        summary[clock] = {"ratios": [round(r, 2) for r in ratios], "spread": round(spread, 4),
                          "teacher_p50_ms": [round(r[0], 4) for r in rows],
                          "final_p50_ms": [round(r[1], 4) for r in rows]}
        print(f"{clock:4s} clock: speedup {', '.join(f'{r:.2f}x' for r in ratios)}  spread "
              f"{100 * spread:.1f}%  (teacher p50 {', '.join(f'{r[0]:.3f}' for r in rows)} ms)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
