"""``compress bench`` and ``compress inspect``: parse, measure, print. Logic lives in the modules.

Exit codes: 0 ok (an inconclusive comparison too, with a warning, unless --strict); 1 inference
failed; 2 bad arguments or files; 3 a latency regression.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from compress.common.ort import OPT_LEVELS
from compress.errors import GateError, InputError

CLOCKS = ("auto", "wall", "cpu")


def register(group: click.Group) -> None:
    """Add ``bench`` and ``inspect`` to the ``compress`` command group."""
    group.add_command(bench)
    group.add_command(inspect)


def parse_dims(values: tuple[str, ...]) -> dict[str, int]:
    """``("batch=1", "sequence=128")`` -> ``{"batch": 1, "sequence": 128}``."""
    dims = {}
    for v in values:
        name, eq, size = v.partition("=")
        if not eq or not name.strip() or not size.strip().isdigit() or int(size) < 1:
            raise InputError(f"--dim {v!r}: expected NAME=SIZE with SIZE a positive integer "
                             "(e.g. --dim batch=1 --dim sequence=128)")
        dims[name.strip()] = int(size)
    return dims


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--vs", "other", type=click.Path(path_type=Path), metavar="OTHER.onnx",
              help="Compare with this model in the same run: is MODEL slower than OTHER?")
@click.option("--baseline", type=click.Path(path_type=Path), metavar="FILE",
              help="Compare with a baseline saved by --save-baseline.")
@click.option("--save-baseline", type=click.Path(path_type=Path), metavar="FILE",
              help="Measure MODEL against the reference workload and save a baseline.")
@click.option("--reference", type=click.Path(path_type=Path), metavar="REF.onnx",
              help="With --save-baseline: time MODEL relative to this model (the teacher, say) "
                   "instead of the built-in reference workload; --baseline reuses it.")
@click.option("--processes", type=click.IntRange(1, 64), default=None,
              help="Fresh processes to measure in: --save-baseline [default: 3], --baseline "
                   "[default: 1, this one].")
@click.option("--tolerance", type=click.FloatRange(0, 10), default=0.10, show_default=True,
              help="Allowed slowdown for --vs/--baseline (0.10 = 10%).")
@click.option("--strict", is_flag=True, help="Exit 3 on an inconclusive comparison too.")
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="ORT intra-op threads [default: 1, or the baseline's].")
@click.option("--opt-level", type=click.Choice(OPT_LEVELS), default=None,
              help="ORT graph optimization level [default: all, or the baseline's].")
@click.option("--runs", type=click.IntRange(1, 10_000_000), default=None,
              help="Timed runs of a plain bench [default: 300].")
@click.option("--time", "seconds", type=click.FloatRange(0, 3600, min_open=True), default=None,
              help="Seconds: how long a plain bench runs, or the cap of a comparison "
                   "[default: 20; 10 for --save-baseline, all processes together].")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of a dynamic input dimension (default batch=1, sequence=128, else 1).")
@click.option("--inputs", type=click.Path(path_type=Path), metavar="FILE.npz",
              help="Input arrays, one per model input name.")
@click.option("--clock", type=click.Choice(CLOCKS), default="auto", show_default=True,
              help="auto: thread CPU time for comparisons at 1 thread (steady on busy machines), "
                   "wall time otherwise.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), metavar="OUT",
              help="Also write the results as JSON.")
def bench(model: Path, other: Path | None, baseline: Path | None, save_baseline: Path | None,
          reference: Path | None, processes: int | None, tolerance: float, strict: bool, threads: int | None, opt_level: str | None,
          runs: int | None, seconds: float | None, dims: tuple[str, ...], inputs: Path | None,
          clock: str, json_out: Path | None) -> None:
    """Measure the latency of MODEL (ONNX Runtime, CPU), or compare it with another model or a
    saved baseline."""
    import onnxruntime as ort

    from compress.bench.compare import check_onnx_file

    ort.set_default_logger_severity(4)  # failures are reported once, as "error: ...", not logged too

    modes = [n for n, v in (("--vs", other), ("--baseline", baseline),
                            ("--save-baseline", save_baseline)) if v is not None]
    if len(modes) > 1:
        raise InputError(f"{' and '.join(modes)} cannot be combined: pick one")
    if runs is not None and seconds is not None:
        raise InputError("--runs and --time cannot be combined: pick one")
    if runs is not None and modes:
        raise InputError(f"--runs applies to a plain bench; {modes[0]} measures until a verdict, "
                         "capped by --time")
    if (reference is not None or processes is not None) and not (baseline or save_baseline):
        raise InputError(f"{'--reference' if reference is not None else '--processes'} applies "
                         "to --save-baseline and --baseline")
    if inputs is not None and dims:
        raise InputError("--inputs and --dim cannot be combined: the arrays fix the shapes")
    if clock == "cpu" and (threads or 1) > 1:
        raise InputError("--clock cpu times only the calling thread: use it with --threads 1")
    dim_map = parse_dims(dims)
    check_onnx_file(model)
    if other is not None:
        check_onnx_file(other)
        result = _compare(model, other, tolerance, strict, threads or 1, opt_level or "all",
                          seconds or 20.0, dim_map, inputs, clock)
    elif baseline is not None:
        result = _check_baseline(model, baseline, tolerance, strict, threads, opt_level,
                                 seconds or 20.0, dim_map, inputs, reference, processes or 1)
    elif save_baseline is not None:
        result = _save_baseline(model, save_baseline, threads or 1, opt_level or "all",
                                seconds or 10.0, dim_map, inputs, clock, reference,
                                processes or 3)
    else:
        result = _plain(model, threads or 1, opt_level or "all", runs, seconds, dim_map, inputs,
                        "wall" if clock == "auto" else clock)
    if json_out is not None:
        from compress.common.files import write_json

        write_json(json_out, result)
    if result.get("verdict") == "slower" or (strict and result.get("verdict") == "inconclusive"):
        raise GateError(f"latency regression: {result['message']}")


def _feeds(sess, dims: dict[str, int], inputs: Path | None) -> dict:
    from compress.bench.compare import model_feeds

    return model_feeds(sess, dims, inputs)


def _plain(model: Path, threads: int, opt_level: str, runs: int | None, seconds: float | None,
           dims: dict[str, int], inputs: Path | None, clock: str) -> dict:
    from compress.bench.compare import CompareSettings, calls_per_block, open_model, session_runner
    from compress.bench.inspection import inspect_model
    from compress.bench.latency import feed_spec, warm_until_steady
    from compress.bench.stats import summarize

    info = inspect_model(model)
    sess, created = open_model(model, threads, opt_level)
    feeds = _feeds(sess, dims, inputs)
    run = session_runner(sess, feeds, clock)
    run(1)  # fail fast, as a runtime error (exit 1), if the inputs do not fit the graph
    per_call = warm_until_steady(sess, feeds, calls=5)
    if seconds is not None:
        block = calls_per_block(per_call, CompareSettings())
        parts, t_end = [], time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            parts.append(run(block))
        ms = np.concatenate(parts)
    else:
        ms = run(runs or 300)
    st = summarize(ms)
    spec = feed_spec(feeds)
    click.echo(f"model      {model}  ({info['bytes'] / 1e6:.2f} MB, sha256 {info['sha256'][:12]}, "
               f"quantization {info['quantization']})")
    source = f"from {inputs}" if inputs else "seeded random values; --inputs FILE.npz for real ones"
    click.echo("inputs     " + ", ".join(f"{k} {v['dtype']}{v['shape']}" for k, v in spec.items())
               + f"  ({source})")
    click.echo(f"session    created in {created:.1f} ms ({threads} thread(s), opt {opt_level})")
    click.echo(f"latency    p50 {st.p50:.4f}  p90 {st.p90:.4f}  p99 {st.p99:.4f}  mean {st.mean:.4f}"
               f"  std {st.std:.4f} ms  ({st.n} runs, {clock} clock)")
    click.echo(f"throughput {st.throughput:.1f} inferences/s (batch as given)")
    return {"model": str(model), "sha256": info["sha256"], "bytes": info["bytes"],
            "threads": threads, "opt_level": opt_level, "clock": clock, "inputs": spec,
            "latency_ms": {k: round(getattr(st, k), 5) for k in ("p50", "p90", "p99", "mean", "std", "min")},
            "runs": st.n, "throughput_per_s": round(st.throughput, 2),
            "session_create_ms": round(created, 3)}


def _warn_inconclusive(verdict: str, strict: bool) -> None:
    if verdict == "inconclusive" and not strict:
        click.echo("warning: inconclusive: the interval still straddles 1 + tolerance at the time "
                   "cap; measure longer (--time) or pass --strict to fail on it", err=True)


def _compare(model: Path, other: Path, tolerance: float, strict: bool, threads: int,
             opt_level: str, seconds: float, dims: dict, inputs: Path | None, clock: str) -> dict:
    from compress.bench.baseline import check_vs
    from compress.bench.compare import CompareSettings

    settings = CompareSettings(tolerance=tolerance, max_seconds=seconds, clock=clock)
    v, c = check_vs(model, other, tolerance, threads, opt_level, seconds, dims, inputs, settings)
    from compress.bench.latency import pick_clock

    click.echo(f"A {model}: p50 {c.a_stats.p50:.4f} ms   B {other}: p50 {c.b_stats.p50:.4f} ms   "
               f"({pick_clock(clock, threads)} clock)")
    click.echo(v.message)
    _warn_inconclusive(v.verdict, strict)
    return {**v.as_dict(), "tolerance": tolerance, "rounds": c.rounds, "calls_per_block": c.calls,
            "seconds": round(c.seconds, 3), "a": {"path": str(model), **c.a_stats.as_dict()},
            "b": {"path": str(other), **c.b_stats.as_dict()}}


def _check_baseline(model: Path, baseline: Path, tolerance: float, strict: bool,
                    threads: int | None, opt_level: str | None, seconds: float, dims: dict,
                    inputs: Path | None, reference: Path | None, processes: int) -> dict:
    from compress.bench.baseline import check_against_baseline, load_baseline

    load_baseline(baseline)  # a bad baseline file is reported before any measuring
    feeds = None
    if dims or inputs:
        from compress.bench.compare import open_model

        feeds = _feeds(open_model(model, 1, "basic")[0], dims, inputs)
    v = check_against_baseline(model, baseline, tolerance, threads, opt_level, seconds, feeds,
                               reference=reference, processes=processes)
    click.echo(v.message)
    if v.fingerprint_mismatch:
        click.echo("warning: machine fingerprint differs from the baseline's: "
                   + "; ".join(v.fingerprint_mismatch), err=True)
    _warn_inconclusive(v.verdict, strict)
    return {**v.as_dict(), "tolerance": tolerance, "baseline": str(baseline)}


def _save_baseline(model: Path, out: Path, threads: int, opt_level: str, seconds: float,
                   dims: dict, inputs: Path | None, clock: str, reference: Path | None,
                   processes: int) -> dict:
    from compress.bench.baseline import format_fingerprint, save_baseline
    from compress.bench.compare import CompareSettings, open_model

    feeds = _feeds(open_model(model, 1, "basic")[0], dims, inputs)
    data = save_baseline(model, out, threads, opt_level,
                         CompareSettings(max_seconds=seconds, clock=clock), feeds, reference,
                         processes)
    n, st, sp = data["normalized"], data["stats"], data["spread"]
    ref = reference or "reference workload"
    click.echo(f"model      {model}: p50 {st['model']['p50']:.4f} ms; {ref} p50 "
               f"{st['reference']['p50']:.4f} ms")
    click.echo(f"normalized {n['ratio']:.4f}x the reference (95% CI {n['low']:.4f}-{n['high']:.4f},"
               f" {len(data['sessions'])} session pairs in {sp['processes']} fresh processes)")
    click.echo(f"spread     {sp['process']:.1%} between processes, {sp['session']:.1%} between "
               "sessions (log ratio sd)")
    click.echo(f"machine    {format_fingerprint(data['fingerprint'])}")
    click.echo(f"saved      {out}")
    return data


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "json_out", is_flag=True, help="Print JSON instead of text.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of a dynamic input dimension for the MAC count "
                   "(default batch=1, sequence=128, else 1).")
def inspect(model: Path, json_out: bool, dims: tuple[str, ...]) -> None:
    """Show MODEL's inputs, outputs, opsets, op histogram, quantization format, size, MACs,
    the quantized share of weights and MACs, and the execution providers available."""
    from compress.bench.inspection import format_inspection, inspect_model

    info = inspect_model(model, parse_dims(dims))
    click.echo(json.dumps(info, indent=2) if json_out else format_inspection(info))
