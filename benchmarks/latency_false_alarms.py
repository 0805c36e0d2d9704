"""Does the baseline check cry wolf on a busy machine, and does it still catch a real slowdown?

With two busy-loop processes of its own loading the machine (plus whatever else runs there):
1. ``--spread``: how far fresh processes and session pairs move the model/reference ratio
   (P fresh processes x 4 session pairs, interleaved; the statistic the check uses);
2. builds a copy of the model slowed by real extra work (a side branch of chained MatMuls fed
   by the input, ``regression_power.slowed_variant`` with 32-wide units), calibrated to +15% and
   measured in fresh processes against the original (the same paired, interleaved timing);
3. saves a baseline of the model once, as ``pytest --latency-update`` would (fresh processes);
4. runs N fresh-process checks of the unchanged file and M of the slowed copy, alternating,
   each exactly what ``assert_not_slower(model, baseline=...)`` does in a new pytest process,
   and counts ``slower`` verdicts: false alarms on the unchanged file, catches on the copy.

    .venv/bin/python benchmarks/latency_false_alarms.py --checks 40 --slowed-checks 20

Targets (issue 27, item 7): at most 1 false alarm in 40, at least 19 catches in 20.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regression_power import slowed_variant  # noqa: E402

from compress.bench.sessions import PairRequest, in_fresh_process  # noqa: E402
from compress.bench.stats import spread_of  # noqa: E402

UNIT = 32  # the slowing MatMuls' size

CHECK = """
import json, sys
from compress.bench.baseline import check_against_baseline
v = check_against_baseline(sys.argv[1], sys.argv[2], float(sys.argv[3]),
                           max_seconds=float(sys.argv[4]), processes=int(sys.argv[5]))
print(json.dumps({"verdict": v.verdict, "ratio": v.ratio, "low": v.ci_low, "high": v.ci_high,
                  "message": v.message}))
"""


def digits_cnn(path: Path) -> Path:
    """The tests' digits ResNet (width 8, depth 1-1-1) at 1x32x32, exported untrained: latency
    depends on the graph, not on the weights."""
    import torch

    from compress.export.torch_onnx import export_onnx
    from compress.models.cnn import ResNet

    torch.manual_seed(0)
    return export_onnx(ResNet(1, 10, width=8, depth=(1, 1, 1)).eval(), torch.zeros(1, 1, 32, 32),
                       path, exporter="torchscript")


def inputs_of(model: Path) -> dict:
    from compress.bench.compare import model_feeds, open_model
    from compress.bench.latency import feed_spec

    return feed_spec(model_feeds(open_model(model, 1, "all")[0]))


def ratio_in_processes(model: Path, reference: Path, processes: int, seconds: float) -> list[float]:
    """model/reference (median of per-round ratios) from 4 session pairs in each fresh process."""
    req = PairRequest(str(model), str(reference), inputs_of(model), 1, "all", "cpu", 4, seconds,
                      min_rounds=20)
    out = []
    for _ in range(processes):
        rounds, _ = in_fresh_process(req, timeout=300)
        out.append(float(np.exp(np.mean(np.log([p.ci().ratio for p in rounds])))))
    return out


def measure_spread(model: Path, processes: int, seconds: float) -> dict:
    req = PairRequest(str(model), None, inputs_of(model), 1, "all", "cpu", 4, seconds,
                      min_rounds=20)
    groups = []
    for i in range(processes):
        rounds, _ = in_fresh_process(req, timeout=300)
        groups.append([p.ci() for p in rounds])
        print(f"  spread: process {i + 1}/{processes}: pairs "
              + ", ".join(f"{c.ratio:.4f}" for c in groups[-1])
              + f"  (load {os.getloadavg()[0]:.1f})", flush=True)
    process_sd, session_sd = spread_of(groups)
    means = [float(np.exp(np.mean(np.log([c.ratio for c in g])))) for g in groups]
    return {"process_sd": process_sd, "session_sd": session_sd, "process_means": means}


def calibrate(model: Path, work: Path, target: float, seconds: float) -> tuple[Path, int, float]:
    """The unit count whose slowdown, measured in 2 fresh processes, is closest to ``target``
    (units of a 16x32 @ 32x32 MatMul: about 1% each on the digits CNN, fine enough for 15%)."""
    units, tried = 10, {}
    for _ in range(5):
        path = slowed_variant(model, work / f"slow_{units}.onnx", units, dim=UNIT)
        tried[units] = (path, float(np.mean(ratio_in_processes(path, model, 2, seconds))) - 1)
        print(f"  calibrate: {units} units -> {tried[units][1]:+.1%}", flush=True)
        if abs(tried[units][1] - target) <= 0.005:
            break
        units = max(1, round(units * target / max(tried[units][1], 0.005)))
        if units in tried:
            break
    best = min(tried, key=lambda u: abs(tried[u][1] - target))
    return tried[best][0], best, tried[best][1]


def run_check(path: Path, baseline: Path, tolerance: float, seconds: float, processes: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHECK, str(path), str(baseline), str(tolerance),
                           str(seconds), str(processes)], capture_output=True, text=True,
                          check=False, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"check failed: {proc.stderr.strip()[-2000:]}")
    return {**json.loads(proc.stdout), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="an ONNX model with one input "
                    "(default: the tests' digits ResNet, exported untrained)")
    ap.add_argument("--checks", type=int, default=40, help="checks of the unchanged file")
    ap.add_argument("--slowed-checks", type=int, default=20, help="checks of the slowed copy")
    ap.add_argument("--slowdown", type=float, default=0.15)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--max-seconds", type=float, default=6.0, help="cap of one check")
    ap.add_argument("--check-processes", type=int, default=1)
    ap.add_argument("--baseline-seconds", type=float, default=12.0)
    ap.add_argument("--spread", type=int, default=6, help="fresh processes for the spread (0: skip)")
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes to start")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        result = experiment(args)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def experiment(args: argparse.Namespace) -> dict:
    from compress.bench.baseline import save_baseline
    from compress.bench.compare import CompareSettings
    from compress.common.ort import cpu_info

    t_start, load = time.perf_counter(), [os.getloadavg()[0]]
    work = Path(tempfile.mkdtemp(prefix="latency_false_alarms."))
    model = args.model or digits_cnn(work / "digits_cnn.onnx")
    cpu, flags = cpu_info()
    vnni = "VNNI" if flags & {"avx512_vnni", "avx_vnni"} else "no VNNI"
    print(f"model {model}; CPU {cpu} ({os.cpu_count()} cores, {vnni}); {args.busy} busy loops",
          flush=True)
    spread = measure_spread(model, args.spread, 3.0) if args.spread else None
    if spread:
        print(f"spread: between processes {spread['process_sd']:.2%}, between sessions "
              f"{spread['session_sd']:.2%} (log sd)", flush=True)
    slowed, units, calibrated = calibrate(model, work, args.slowdown, 3.0)
    check = ratio_in_processes(slowed, model, 3, 3.0)
    print(f"slowed copy: {units} MatMul units; {', '.join(f'{r - 1:+.1%}' for r in check)} "
          "in 3 fresh processes", flush=True)
    baseline = work / "baseline.json"
    save_baseline(model, baseline, settings=CompareSettings(max_seconds=args.baseline_seconds))
    saved = json.loads(baseline.read_text())["spread"]
    print(f"baseline: spread {saved['process']:.2%} between its processes, "
          f"{saved['session']:.2%} between sessions", flush=True)
    runs: dict[str, list[dict]] = {"unchanged": [], "slowed": []}
    every = max(1, round(args.checks / max(args.slowed_checks, 1)))
    for i in range(args.checks + args.slowed_checks):
        want_slow = len(runs["slowed"]) < args.slowed_checks and (
            i % (every + 1) == every or len(runs["unchanged"]) >= args.checks)
        name, path = ("slowed", slowed) if want_slow else ("unchanged", model)
        r = run_check(path, baseline, args.tolerance, args.max_seconds, args.check_processes)
        runs[name].append(r)
        load.append(os.getloadavg()[0])
        print(f"check {i + 1}: {name:9s} {r['verdict']:12s} {r['ratio']:.3f} "
              f"({r['low']:.3f}-{r['high']:.3f}) {r['seconds']:.1f} s, load {load[-1]:.1f}",
              flush=True)
    rows = {k: summary(v) for k, v in runs.items()}
    total = time.perf_counter() - t_start
    print(f"\ntolerance {args.tolerance:.0%}, check cap {args.max_seconds:.0f} s in "
          f"{args.check_processes} process(es); load average {min(load):.1f}-{max(load):.1f}; "
          f"{total / 60:.1f} min in all")
    print("| file | checks | slower | not slower | inconclusive | median ratio | s/check |")
    print("|---|---|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['checks']} | {r['slower']} | {r['not slower']} | {r['inconclusive']} "
              f"| {r['median_ratio']:.3f} | {r['seconds_median']:.1f} |")
    return {"model": str(model), "cpu": cpu, "vnni": vnni == "VNNI", "busy": args.busy,
            "tolerance": args.tolerance, "max_seconds": args.max_seconds,
            "check_processes": args.check_processes, "spread": spread,
            "slowdown": {"units": units, "calibrated": calibrated, "fresh_processes": check},
            "baseline_spread": saved, "load": [min(load), max(load)], "rows": rows,
            "runs": runs, "minutes": total / 60}


def summary(runs: list[dict]) -> dict:
    count = {v: sum(r["verdict"] == v for r in runs) for v in ("slower", "not slower",
                                                                "inconclusive")}
    return {"checks": len(runs), **count,
            "median_ratio": float(np.median([r["ratio"] for r in runs])) if runs else 0.0,
            "seconds_median": float(np.median([r["seconds"] for r in runs])) if runs else 0.0}


if __name__ == "__main__":
    main()
