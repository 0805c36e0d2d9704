"""Run a bundle's own runner on aarch64 (qemu user emulation): hashes, quality within tolerance.

    python benchmarks/arm64_check.py setup                 build the aarch64 Python + wheels
    python benchmarks/arm64_check.py check BUNDLE ...      runner.py BUNDLE --eval under qemu
    python benchmarks/arm64_check.py run RUN_DIR ...       RUN_DIR/bundle (.onnx) and
                                                           `compress deploy --target edge-arm64` (.ort)

Everything comes from Debian's and PyPI's registries, unpacked under .cache/ (no system change):
qemu-user 10.0.2 (benchmarks/qemu/fetch_qemu.sh), an arm64 Debian bookworm Python 3.11 root
(apt-get with arm64 as the native architecture and private lists, cache and status; each .deb
unpacked with dpkg-deb -x), and the aarch64 onnxruntime/numpy/pillow/tokenizers wheels
(pip --platform manylinux*_aarch64 --only-binary). The bundle's runner.py then runs on real
aarch64 ONNX Runtime kernels (MLAS NEON / int8 dot-product paths), translated by qemu.

Timing under emulation is meaningless (about 400x slower than native and not proportional):
this script never reports a latency; the runner's latency line is dropped.
Exit status: 0 when every bundle passes its manifest's check, 1 when one fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ARM64_CACHE", ROOT / ".cache" / "arm64"))
QEMU_BIN = ROOT / ".cache" / "qemu" / "root" / "usr" / "bin" / "qemu-aarch64"
DEBS = ["python3.11", "python3-venv", "libstdc++6", "libgomp1"]
# pillow for image inputs and tokenizers for text are imported by the runner only for raw
# inputs; --eval reads eval.npz. They are installed so `runner.py BUNDLE IMAGE` works too.
WHEELS = ["onnxruntime", "numpy", "pillow", "tokenizers"]
SUITE = "deb http://deb.debian.org/debian bookworm main"


class Bad(Exception):
    """Bad input: one line, exit 2."""


def _sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"error: {' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n"
                         + "\n".join(tail))
    return proc


def _apt_options(apt: Path) -> list[str]:
    return ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64",
            "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", f"Dir::State::Status={apt / 'status'}", "-o", "Debug::NoLocking=1",
            "-o", "APT::Install-Recommends=false"]


def build_root(cache: Path) -> Path:
    """An arm64 Debian root holding python3.11 and the C++/OpenMP runtimes ORT links to."""
    root, apt = cache / "root", cache / "apt"
    if (root / "usr" / "bin" / "python3.11").is_file():
        return root
    for d in (apt / "lists" / "partial", apt / "cache" / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(SUITE + "\n")
    (apt / "status").write_text("")
    opts = _apt_options(apt)
    _sh(["apt-get", *opts, "update", "-qq"])
    _sh(["apt-get", *opts, "install", "-d", "-y", "-qq", *DEBS])
    debs = sorted((apt / "cache" / "archives").glob("*_arm64.deb")) \
        + sorted((apt / "cache" / "archives").glob("*_all.deb"))
    tmp = Path(tempfile.mkdtemp(prefix=".root.", dir=cache))
    for deb in debs:
        _sh(["dpkg-deb", "-x", str(deb), str(tmp)])
    os.replace(tmp, root)
    print(f"setup     arm64 root: {len(debs)} debs from Debian bookworm -> {root}", file=sys.stderr)
    return root


def build_site(cache: Path) -> Path:
    """aarch64 CPython 3.11 wheels from PyPI, unpacked into one site directory."""
    site = cache / "site"
    if (site / "onnxruntime").is_dir():
        return site
    tmp = Path(tempfile.mkdtemp(prefix=".site.", dir=cache))
    _sh([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", str(tmp),
         "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64",
         "--platform", "manylinux_2_17_aarch64", "--only-binary=:all:", "--python-version", "3.11",
         "--implementation", "cp", *WHEELS])
    os.replace(tmp, site)
    return site


def setup(cache: Path = CACHE) -> dict:
    """qemu, the arm64 root and the wheels; returns their paths and versions."""
    if not QEMU_BIN.is_file():
        _sh(["bash", str(ROOT / "benchmarks" / "qemu" / "fetch_qemu.sh")])
    cache.mkdir(parents=True, exist_ok=True)
    root, site = build_root(cache), build_site(cache)
    known = cache / "guest.json"
    if known.is_file():
        return json.loads(known.read_text())
    probe = ("import platform, onnxruntime as o, numpy as n; print(platform.machine(), "
             "platform.python_version(), o.__version__, n.__version__)")
    out = _guest(root, site, ["-c", probe]).stdout.split()
    qemu = _sh([str(QEMU_BIN), "--version"]).stdout.splitlines()[0]
    env = {"qemu": qemu, "machine": out[0], "python": out[1], "onnxruntime": out[2],
           "numpy": out[3], "root": str(root), "site": str(site)}
    if env["machine"] != "aarch64":
        raise SystemExit(f"error: the guest reports machine {env['machine']!r}, not aarch64")
    known.write_text(json.dumps(env, indent=2) + "\n")
    return env


def _guest(root: Path, site: Path, args: list[str], timeout: float = 3600
           ) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    cmd = [str(QEMU_BIN), "-L", str(root), str(root / "usr" / "bin" / "python3.11"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


# Runs in the aarch64 guest: each bundle's own runner.py, loaded from that bundle, its main()
# called as `python runner.py BUNDLE --eval --json OUT` would; one interpreter for them all
# (starting Python and importing onnxruntime under qemu takes most of a check's time).
GUEST = """
import contextlib, importlib.util, io, json, sys
jobs, out = json.loads(sys.argv[1]), sys.argv[2]
results = []
for i, (bundle, result) in enumerate(jobs):
    spec = importlib.util.spec_from_file_location(f"bundle_runner_{i}", bundle + "/runner.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = mod.main([bundle, "--eval", "--json", result])
    results.append({"exit": code, "output": buf.getvalue()})
json.dump(results, open(out, "w"))
"""


def check_bundles(env: dict, bundles: list[Path]) -> list[dict]:
    """``runner.py BUNDLE --eval`` for each bundle on the aarch64 guest: the runner verifies
    every sha256 and compares the outputs with the manifest's reference within its tolerance
    (exit 0, or 3 saying by how much)."""
    bundles = [Path(b).resolve() for b in bundles]
    for b in bundles:
        if not (b / "manifest.json").is_file() or not (b / "runner.py").is_file():
            raise Bad(f"{b}: not a bundle (needs manifest.json and runner.py)")
    with tempfile.TemporaryDirectory(prefix="arm64-") as tmp:
        jobs = [[str(b), str(Path(tmp) / f"result-{i}.json")] for i, b in enumerate(bundles)]
        (Path(tmp) / "guest.py").write_text(GUEST)
        proc = _guest(Path(env["root"]), Path(env["site"]),
                      [str(Path(tmp) / "guest.py"), json.dumps(jobs), str(Path(tmp) / "out.json")])
        if not (Path(tmp) / "out.json").is_file():
            raise SystemExit(f"error: the aarch64 guest failed (exit {proc.returncode}): "
                             + (proc.stderr or proc.stdout).strip()[-800:])
        runs = json.loads((Path(tmp) / "out.json").read_text())
        results = [json.loads(Path(j[1]).read_text()) if Path(j[1]).is_file() else {}
                   for j in jobs]
    return [_result(b, run, res) for b, run, res in zip(bundles, runs, results, strict=True)]


def _result(bundle: Path, run: dict, result: dict) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    lines = [ln for ln in run["output"].splitlines()
             if ln.strip() and not ln.startswith("latency")]  # emulated time means nothing
    verified = next((ln for ln in lines if ln.startswith("verified")), "")
    result.pop("latency_ms", None)
    return {"bundle": str(bundle), "model": manifest.get("runtime", {}).get("model"),
            "precision": (manifest.get("check") or {}).get("precision"),
            "exit": run["exit"], "passed": run["exit"] == 0 and bool(verified),
            "verified": verified, "lines": lines, "result": result}


def deploy_ort(run_dir: Path, target: str = "edge-arm64") -> Path:
    """``compress deploy RUN_DIR --target edge-arm64``: the bundle re-cut as an arm .ort."""
    exe = Path(sys.executable).with_name("compress")
    cmd = [str(exe) if exe.is_file() else "compress", "deploy", str(run_dir), "--target", target]
    _sh(cmd)
    return Path(run_dir) / "deploy" / target


def report(env: dict, results: list[dict]) -> None:
    print(f"guest     {env['machine']} Python {env['python']}, onnxruntime {env['onnxruntime']}, "
          f"numpy {env['numpy']} under {env['qemu']}")
    print("timing    not reported: under qemu user emulation time is ~400x native and says "
          "nothing about the device")
    for r in results:
        mark = "PASS" if r["passed"] else "FAIL"
        print(f"{mark}      {r['bundle']} ({r['model']}, {r['precision']}, exit {r['exit']})")
        for ln in r["lines"]:
            print(f"          {ln}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="arm64_check.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="build the aarch64 Python root and wheels under .cache/arm64")
    c = sub.add_parser("check", help="run each BUNDLE's runner.py --eval on aarch64")
    c.add_argument("bundles", nargs="+", type=Path)
    r = sub.add_parser("run", help="RUN_DIR/bundle (.onnx) and its edge-arm64 deploy (.ort)")
    r.add_argument("runs", nargs="+", type=Path)
    for s in (c, r):
        s.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        env = setup()
        if args.cmd == "setup":
            print(json.dumps(env, indent=2))
            return 0
        bundles = list(args.bundles) if args.cmd == "check" else []
        for run in getattr(args, "runs", []):
            if not (run / "bundle" / "manifest.json").is_file():
                raise Bad(f"{run}: no bundle (RUN_DIR/bundle/manifest.json); run the pipeline "
                          "with a package stage first")
            bundles += [run / "bundle", deploy_ort(run)]
        results = check_bundles(env, bundles)
    except Bad as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report(env, results)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps({"guest": env, "results": results}, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
