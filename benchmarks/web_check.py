"""Run a web bundle in real headless chromium: the manifest's device check on the eval set, the
preprocessing on raw inputs, load time and batch-1 latency, beside the Python runner's.

    python benchmarks/web_check.py RUN_DIR [--formats] [--calls N] [--json OUT]

Writes RUN_DIR/deploy/web (`compress deploy RUN_DIR --target web`), serves it from 127.0.0.1 on a
free port (Python's http.server; no COOP/COEP headers, so onnxruntime-web runs 1 WASM thread) and
opens index.html?check=1 in Debian's chromium through the DevTools protocol (puppeteer-core,
deploy/web/check.mjs). Times are the page's performance.now() in real time (virtual time would
read 0). --formats loads the .onnx and the .ort side by side (bytes, fetch + session create ms,
latency) from a scratch copy of the folder. Needs `make setup-web`.
Exit status: 0 when the check passes, 1 when it fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK_JS = ROOT / "deploy" / "web" / "check.mjs"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args) -> None:
        pass


def serve(folder: Path):
    """A 127.0.0.1 HTTP server on a free port for ``folder``; returns ``(server, base URL)``."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def in_chromium(folder: Path, query: str = "check=1", timeout: float = 900,
                cdp_calls: int = 0) -> dict:
    """index.html?<query> in headless chromium; the page's result object (with
    ``cdp_latency_ms`` when ``cdp_calls``: the main thread's CPU time per call, from CDP)."""
    server, base = serve(folder)
    try:
        proc = subprocess.run(["node", str(CHECK_JS), f"{base}index.html?{query}", str(timeout),
                               str(cdp_calls)],
                              capture_output=True, text=True, timeout=timeout + 60)
    finally:
        server.shutdown()
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"error: check.mjs printed nothing (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def deploy(run_dir: Path) -> Path:
    exe = Path(sys.executable).with_name("compress")
    cmd = [str(exe) if exe.is_file() else "compress", "deploy", str(run_dir), "--target", "web"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr.strip(), file=sys.stderr)
        raise SystemExit(proc.returncode)
    return run_dir / "deploy" / "web"


def python_latency(run_dir: Path, calls: int) -> dict:
    """The bundle's session as its runner.py opens it (x86 onnxruntime, the manifest's threads
    and opt level), ``calls`` batch-1 calls on eval sample 0: this thread's CPU time and wall
    time per call, as the page's are measured."""
    import importlib.util
    import time

    import numpy as np

    bundle = run_dir / "bundle"
    spec = importlib.util.spec_from_file_location("bundle_runner", bundle / "runner.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    manifest = runner.load_manifest(bundle)
    sess, _ = runner.open_session(bundle, manifest)
    data = runner.load_eval(bundle, manifest)
    feeds = {i.name: np.ascontiguousarray(data[i.name][:1]) for i in sess.get_inputs()}
    for _ in range(20):
        sess.run(None, feeds)
    c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(calls):
        sess.run(None, feeds)
    c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
    return {"calls": calls, "thread_cpu_per_call": (c1 - c0) / 1e6 / calls,
            "wall_per_call": (w1 - w0) / 1e6 / calls, "model": manifest["runtime"]["model"],
            "threads": manifest["runtime"]["threads"], "opt_level": manifest["runtime"]["opt_level"]}


def formats(run_dir: Path, web: Path, calls: int, rounds: int = 3) -> dict:
    """The bundle's .onnx and .ort side by side in one page (rounds alternating), from a scratch
    copy of the folder holding both: bytes, fetch, session create and per-call medians."""
    import statistics

    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    names = [manifest["model"]["mobile_onnx"], manifest["model"]["ort"]]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "web"
        shutil.copytree(web, scratch)
        for name in names:
            shutil.copyfile(run_dir / "bundle" / name, scratch / name)
        r = in_chromium(scratch, f"formats={','.join(names)}&rounds={rounds}&calls={max(calls, 1)}")
    if "error" in r:
        raise SystemExit(f"error: format comparison failed in the page: {r['error']}")
    # round 1 also compiles the WASM runtime for whichever file goes first: medians of the rest
    return {n: {"bytes": r[n]["bytes"], "rounds": rounds,
                **{k: statistics.median(r[n][k][1:] or r[n][k])
                   for k in ("fetch_ms", "create_ms", "call_ms")}} for n in names}


def summary(r: dict) -> list[str]:
    if r.get("error"):
        return [f"FAIL      page error: {r['error']}"]
    lines = [f"{'PASS' if r['passed'] else 'FAIL'}      device check on {r['samples']} eval "
             f"samples ({r['model']}, {r.get('browser')}, crossOriginIsolated "
             f"{r.get('crossOriginIsolated')})"]
    for row in r["check"]["rows"]:
        verdict = "ok" if row["ok"] else f"FAILED by {row['by']:.6g}"
        lines.append(f"check     {row['output']}.{row['measure']} {row['value']:.6g} "
                     f"{row['rule']} {row['limit']:.6g} ({r['check']['precision']}): {verdict}")
    if r.get("quality"):
        lines.append("          " + ", ".join(f"{k} {v:.4f}" for k, v in r["quality"].items()))
    lines.append(f"preproc   {json.dumps(r.get('preprocessing'))}")
    ld = r.get("load", {})
    lines.append(f"load      {ld.get('bytes')} bytes: fetch {ld.get('fetch_ms', 0):.1f} ms, "
                 f"first session {ld.get('create_ms', 0):.1f} ms (compiles the WASM runtime), "
                 f"second session {ld.get('create_warm_ms', 0):.1f} ms")
    cdp = r.get("cdp_latency_ms")
    if cdp:
        lines.append(f"latency   chromium WASM 1 thread, DevTools Performance metrics over "
                     f"{cdp['calls']} batch-1 calls: main-thread CPU {cdp['thread_cpu_per_call']:.4f}"
                     f" ms, task {cdp['task_per_call']:.4f} ms, wall {cdp['wall_per_call']:.4f} ms "
                     "per call")
    lat = r.get("latency_ms")
    if lat:
        lines.append(f"latency   chromium WASM 1 thread: p50 {lat['p50']:.4f} ms, mean "
                     f"{lat['mean']:.4f} ms per batch-1 call ({lat['calls']} calls in blocks of "
                     f"{lat['block']}, real time)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="web_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--calls", type=int, default=200, help="timed batch-1 calls (0: none)")
    p.add_argument("--formats", action="store_true", help="also time .onnx against .ort")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not (args.run_dir / "bundle" / "manifest.json").is_file():
        print(f"error: {args.run_dir}: no bundle (RUN_DIR/bundle/manifest.json)", file=sys.stderr)
        return 2
    web = deploy(args.run_dir)
    result = in_chromium(web, f"check=1&calls={args.calls}", cdp_calls=args.calls)
    result["python_runner_latency_ms"] = python_latency(args.run_dir, args.calls) if args.calls else {}
    if args.formats:
        result["formats"] = formats(args.run_dir, web, args.calls)
    print("\n".join(summary(result)))
    py = result["python_runner_latency_ms"]
    if py:
        print(f"latency   python, the runner's session ({py['model']}, x86 onnxruntime, "
              f"{py['threads']} thread(s), opt {py['opt_level']}) over {py['calls']} batch-1 calls: "
              f"thread CPU {py['thread_cpu_per_call']:.4f} ms, wall {py['wall_per_call']:.4f} ms "
              "per call")
    for name, row in result.get("formats", {}).items():
        print(f"format    {name}: {row['bytes']} bytes, fetch {row['fetch_ms']:.1f} ms, session "
              f"create {row['create_ms']:.1f} ms, {row['call_ms']:.4f} ms per call (medians of "
              f"rounds 2-{row['rounds']}, alternating)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
