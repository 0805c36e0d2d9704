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


def in_chromium(folder: Path, query: str = "check=1", timeout: float = 900) -> dict:
    """index.html?<query> in headless chromium; the page's result object."""
    server, base = serve(folder)
    try:
        proc = subprocess.run(["node", str(CHECK_JS), f"{base}index.html?{query}", str(timeout)],
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


def python_latency(run_dir: Path) -> dict:
    """The bundle's runner.py --eval on this machine (x86 onnxruntime, the manifest's threads)."""
    bundle = run_dir / "bundle"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run([sys.executable, str(bundle / "runner.py"), str(bundle), "--eval",
                        "--json", str(out)], capture_output=True, text=True)
        return json.loads(out.read_text()).get("latency_ms", {}) if out.is_file() else {}


def formats(run_dir: Path, web: Path, calls: int) -> dict:
    """The same page on the .onnx and on the .ort, from a scratch copy holding both."""
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "web"
        shutil.copytree(web, scratch)
        for key in ("mobile_onnx", "ort"):
            name = manifest["model"][key]
            shutil.copyfile(run_dir / "bundle" / name, scratch / name)
            r = in_chromium(scratch, f"check=1&calls={calls}&model={name}")
            rows[name] = {"bytes": r.get("load", {}).get("bytes"),
                          "fetch_ms": r.get("load", {}).get("fetch_ms"),
                          "create_ms": r.get("load", {}).get("create_ms"),
                          "create_warm_ms": r.get("load", {}).get("create_warm_ms"),
                          "latency_ms": r.get("latency_ms"), "passed": r.get("passed"),
                          "error": r.get("error")}
    return rows


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
    result = in_chromium(web, f"check=1&calls={args.calls}")
    result["python_runner_latency_ms"] = python_latency(args.run_dir) if args.calls else {}
    if args.formats:
        result["formats"] = formats(args.run_dir, web, args.calls)
    print("\n".join(summary(result)))
    py = result["python_runner_latency_ms"]
    if py:
        print(f"latency   python runner.py (x86 onnxruntime, 1 thread): p50 {py['p50']:.3f} ms, "
              f"mean {py['mean']:.4f} ms over {py['n']} calls")
    for name, row in result.get("formats", {}).items():
        lat = row["latency_ms"] or {}
        print(f"format    {name}: {row['bytes']} bytes, fetch {row['fetch_ms']:.1f} ms, first "
              f"session {row['create_ms']:.1f} ms, second {row['create_warm_ms']:.1f} ms, p50 "
              f"{lat.get('p50', float('nan')):.4f} ms per call, check passed {row['passed']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
