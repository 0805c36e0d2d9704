"""How well does the same-run A/B latency test work on this machine?

Builds variants of a model that are really 5%, 10% and 20% slower (a side branch of real
MatMuls fed by the model's input, whose result is an extra graph output, so ONNX Runtime can
neither fold nor drop it; no sleeps), calibrated by measurement, plus an identical byte copy.
Then runs ``compare_models(variant, model)`` (or, with ``--mode baseline``,
``check_against_baseline(variant, baseline of model)``) many times per variant, round-robin
across variants so machine drift hits all of them, and reports the detection rate per slowdown, the false alarm
rate on the identical copy and the seconds per verdict (session creation and warm-up included).

    .venv/bin/python benchmarks/regression_power.py --model runs/digits-mobile/00-teacher/model.onnx

Targets (issue 5): a 10% slowdown flagged `slower` in >= 95% of trials, the identical copy
flagged in <= 5%, each verdict within 30 s for a model with p50 < 5 ms, at 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from compress.bench.baseline import check_against_baseline, save_baseline
from compress.bench.compare import (
    CompareSettings,
    calls_per_block,
    compare_models,
    open_model,
    sequential_rounds,
    session_runner,
    warm_interleaved,
)
from compress.bench.latency import pick_clock, random_feeds
from compress.bench.stats import INCONCLUSIVE, NOT_SLOWER, SLOWER

UNIT_DIM = 96  # one unit of added work: a (16 x 96) @ (96 x 96) MatMul, about 1-2 us here


def slowed_variant(src: Path, dst: Path, units: int, seed: int = 0, dim: int = UNIT_DIM) -> Path:
    """Copy ``src`` with ``units`` chained (16 x dim) @ (dim x dim) MatMuls added on a branch
    that depends on the input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    rng = np.random.default_rng(seed)
    x = g.input[0].name
    # a scalar from the input times a constant matrix: input-dependent, so not constant-folded
    seed_mat = rng.standard_normal((16, dim)).astype(np.float32)
    g.initializer.append(numpy_helper.from_array(seed_mat, "slow_seed"))
    g.node.append(helper.make_node("ReduceMean", [x], ["slow_s"], keepdims=0))
    g.node.append(helper.make_node("Mul", ["slow_s", "slow_seed"], ["slow_h0"]))
    # orthogonal weights keep the values bounded (no overflow, no denormals) along the chain
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    g.initializer.append(numpy_helper.from_array(q.astype(np.float32), "slow_w"))
    for i in range(units):
        g.node.append(helper.make_node("MatMul", [f"slow_h{i}", "slow_w"], [f"slow_h{i + 1}"]))
    g.node.append(helper.make_node("ReduceSum", [f"slow_h{units}"], ["slow_out"], keepdims=0))
    g.output.append(helper.make_tensor_value_info("slow_out", TensorProto.FLOAT, []))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def measured_ratio(a: Path, b: Path, seconds: float, threads: int) -> float:
    """The ratio of medians of A over B from a fixed-length interleaved run (no early stop)."""
    s = CompareSettings(max_seconds=seconds, warmup_seconds=2.0)
    sa, _ = open_model(a, threads, "all")
    sb, _ = open_model(b, threads, "all")
    clock = pick_clock(s.clock, threads)
    runs = [session_runner(sa, random_feeds(sa), clock), session_runner(sb, random_feeds(sb), clock)]
    calls = calls_per_block(max(warm_interleaved(runs, s)), s)
    return sequential_rounds(runs[0], runs[1], calls, s, stop=lambda ci: None).ci.ratio


def calibrate(model: Path, folder: Path, target: float, threads: int, seconds: float,
              slope: float) -> tuple[Path, int, float, float]:
    """Find the unit count whose measured slowdown is within 1 point of ``target``."""
    units = max(1, round(target / slope))
    measured = 0.0
    for _ in range(5):
        path = slowed_variant(model, folder / f"slow_{units}.onnx", units)
        measured = measured_ratio(path, model, seconds, threads) - 1.0
        print(f"  calibrate {target:.0%}: {units} units -> {measured:+.2%}", flush=True)
        if abs(measured - target) <= 0.01:
            break
        slope = max(measured, 1e-4) / units
        units = max(1, round(target / slope))
    return path, units, measured, slope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("runs/digits-mobile/00-teacher/model.onnx"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--mode", choices=("vs", "baseline"), default="vs",
                    help="vs: variant against the model in one run (compress bench A --vs B); "
                         "baseline: variant against a baseline of the model saved once, "
                         "normalized by the reference workload (compress bench A --baseline F)")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--max-seconds", type=float, default=20.0, help="time cap of one comparison")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--slowdowns", default="0.05,0.10,0.20")
    ap.add_argument("--calibrate-seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"error: {args.model}: no such file (run `compress pipeline "
                         "pipelines/mobile.yaml` first, or pass --model)")

    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="regression_power."))
    model = work / "model.onnx"
    shutil.copyfile(args.model, model)
    copy = shutil.copyfile(model, work / "identical.onnx")
    base_ms = measured_base_p50(model, args.threads)
    print(f"model {args.model}: p50 {base_ms:.3f} ms at {args.threads} thread(s)", flush=True)

    probe = slowed_variant(model, work / "probe.onnx", 40)
    slope = max(measured_ratio(probe, model, args.calibrate_seconds, args.threads) - 1, 1e-3) / 40
    variants: dict[str, tuple[Path, float]] = {"identical": (Path(copy), 0.0)}
    for target in (float(t) for t in args.slowdowns.split(",")):
        path, units, measured, slope = calibrate(model, work, target, args.threads,
                                                 args.calibrate_seconds, slope)
        variants[f"{target:.0%} slower"] = (path, measured)

    settings = CompareSettings(tolerance=args.tolerance, max_seconds=args.max_seconds)
    baseline = work / "baseline.json"
    if args.mode == "baseline":
        save_baseline(model, baseline, args.threads, settings=CompareSettings(max_seconds=10.0))
    results: dict[str, list[tuple[str, float, float]]] = {k: [] for k in variants}
    for trial in range(args.trials):
        for name, (path, _) in variants.items():
            t0 = time.perf_counter()
            if args.mode == "baseline":
                v = check_against_baseline(path, baseline, args.tolerance, args.threads,
                                           max_seconds=args.max_seconds)
                verdict, ratio = v.verdict, v.ratio
            else:
                c = compare_models(path, model, settings, threads=args.threads)
                verdict, ratio = c.verdict, c.ci.ratio
            results[name].append((verdict, ratio, time.perf_counter() - t0))
        print(f"trial {trial + 1}/{args.trials}: " + ", ".join(
            f"{k} {v[-1][0]} {v[-1][1]:.3f} ({v[-1][2]:.1f}s)" for k, v in results.items()), flush=True)

    rows = []
    for name, (_, measured) in variants.items():
        r = results[name]
        secs = np.array([t for _, _, t in r])
        count = {v: sum(1 for x, _, _ in r if x == v) for v in (SLOWER, NOT_SLOWER, INCONCLUSIVE)}
        rows.append({"variant": name, "measured_slowdown": round(measured, 4), "trials": len(r),
                     **count, "flagged_rate": count[SLOWER] / len(r),
                     "median_ratio": round(float(np.median([x for _, x, _ in r])), 4),
                     "seconds_median": round(float(np.median(secs)), 2),
                     "seconds_max": round(float(secs.max()), 2)})
    load = (load_start, os.getloadavg()[0])
    print_table(rows, args, base_ms, load)
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "mode": args.mode,
                                         "p50_ms": base_ms,
                                         "tolerance": args.tolerance, "load_avg_1min": load,
                                         "rows": rows}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def measured_base_p50(model: Path, threads: int) -> float:
    from compress.bench.latency import time_runs

    sess, _ = open_model(model, threads, "all")
    feeds = random_feeds(sess)
    time_runs(sess, feeds, 0, 50)
    return float(np.median(time_runs(sess, feeds, 500)))


def print_table(rows: list[dict], args: argparse.Namespace, base_ms: float,
                load: tuple[float, float]) -> None:
    print(f"\nmode {args.mode}, tolerance {args.tolerance:.0%}, cap {args.max_seconds:.0f} s, {args.threads} thread(s),"
          f" model p50 {base_ms:.3f} ms, load average {load[0]:.1f} at start, {load[1]:.1f} at end"
          f" ({os.cpu_count()} cores)")
    print("| variant | calibrated slowdown | median ratio in trials | trials | slower | not slower "
          "| inconclusive | flagged | s/verdict median | s/verdict max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['measured_slowdown']:+.1%} | {r['median_ratio']:.3f} "
              f"| {r['trials']} | {r[SLOWER]} "
              f"| {r[NOT_SLOWER]} | {r[INCONCLUSIVE]} | {r['flagged_rate']:.0%} "
              f"| {r['seconds_median']:.1f} | {r['seconds_max']:.1f} |")


if __name__ == "__main__":
    main()
