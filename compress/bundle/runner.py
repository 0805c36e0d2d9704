"""Run a compress deploy bundle on any box with ONNX Runtime: no torch, no compress.

    python runner.py BUNDLE --eval                 verify hashes, evaluate eval.npz, time it
    python runner.py BUNDLE IMAGE.png ...          predict (images, or text lines / .txt files)
    python runner.py BUNDLE --bench --json OUT     latency baseline for `compress bench --baseline`

Needs onnxruntime and numpy; pillow for images and tokenizers for text, imported only then.
Every file is checked against the manifest's sha256 before use. A refusal prints one line
starting with ``error:`` and exits 2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

MANIFEST_VERSIONS = (1,)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
              "tensor(bool)": np.bool_}
_ISA = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
        "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve",
        "sve2", "i8mm", "bf16", "fphp", "asimdhp"}


class Refusal(Exception):
    """The bundle or an argument cannot be used; printed as one line, exit 2."""


# -- the bundle -----------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(bundle: Path) -> dict:
    """Read BUNDLE/manifest.json and check its version."""
    if not bundle.is_dir():
        raise Refusal(f"{bundle}: not a bundle directory")
    path = bundle / "manifest.json"
    if not path.is_file():
        raise Refusal(f"{path}: missing (a bundle holds manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Refusal(f"{path}: not valid JSON ({e})") from None
    version = manifest.get("manifest_version") if isinstance(manifest, dict) else None
    if version not in MANIFEST_VERSIONS:
        raise Refusal(f"{path}: unknown manifest_version {version!r} (this runner reads "
                      f"{', '.join(map(str, MANIFEST_VERSIONS))})")
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise Refusal(f"{path}: no 'files' table of sha256 hashes")
    return manifest


def bundle_file(bundle: Path, name: str) -> Path:
    """``bundle/name``, refusing a path that leaves the bundle (``..``, absolute, symlinks)."""
    if (not isinstance(name, str) or not name or PurePosixPath(name).is_absolute()
            or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive
            or ".." in PurePosixPath(name.replace("\\", "/")).parts):
        raise Refusal(f"{bundle}/manifest.json: file path {name!r} leaves the bundle")
    path = bundle / name
    root = bundle.resolve()
    if not path.resolve().is_relative_to(root):
        raise Refusal(f"{path}: resolves outside the bundle ({path.resolve()})")
    return path


def verify(bundle: Path, manifest: dict) -> int:
    """Check every file's size and sha256; returns the number of files checked."""
    for name, entry in manifest["files"].items():
        path = bundle_file(bundle, name)
        if not path.is_file():
            raise Refusal(f"{path}: missing (listed in manifest.json)")
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise Refusal(f"{bundle}/manifest.json: no sha256 for {name!r}")
        if path.stat().st_size != entry.get("bytes", path.stat().st_size) \
                or _sha256(path) != entry["sha256"]:
            raise Refusal(f"{path}: sha256 mismatch (file changed or corrupt)")
    for name in _used_files(manifest):
        if name not in manifest["files"]:
            raise Refusal(f"{bundle}/manifest.json: {name!r} is used but has no sha256 entry")
    return len(manifest["files"])


def _used_files(manifest: dict) -> list[str]:
    used = [manifest.get("runtime", {}).get("model", "model.onnx"), "preprocess.json"]
    if "eval" in manifest:
        used.append(manifest["eval"].get("file", "eval.npz"))
    return used


def open_session(bundle: Path, manifest: dict, threads: int | None = None):
    """An ORT session on the manifest's runtime model, with its providers where this build has
    them and the CPU otherwise. Returns ``(session, notices)``."""
    import onnxruntime as ort

    rt = manifest.get("runtime", {})
    model = bundle_file(bundle, rt.get("model", "model.onnx"))
    wanted = list(rt.get("providers") or ["CPUExecutionProvider"])
    have = set(ort.get_available_providers())
    providers = [p for p in wanted if p in have] or ["CPUExecutionProvider"]
    notices = [f"{p} is not in this onnxruntime build ({ort.__version__}); falling back"
               for p in wanted if p not in have]
    if "CPUExecutionProvider" not in providers:
        providers.append("CPUExecutionProvider")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or rt.get("threads", 1))
    so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }.get(rt.get("opt_level", "all"), ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.log_severity_level = 3
    if model.suffix == ".ort" and manifest.get("model", {}).get("ort_optimization_style") == "runtime":
        # replay the optimizations saved in the .ort (the file's hash was verified above)
        so.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    return ort.InferenceSession(str(model), so, providers=providers), notices


def load_eval(bundle: Path, manifest: dict) -> dict[str, np.ndarray]:
    path = bundle_file(bundle, manifest.get("eval", {}).get("file", "eval.npz"))
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -- running ----------------------------------------------------------------------------------

def _step(sess) -> int:
    """The model's fixed batch, else 1: latency per call is batch-1 latency, as the run measured."""
    first = sess.get_inputs()[0].shape
    return first[0] if first and isinstance(first[0], int) and first[0] > 0 else 1


def run_all(sess, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Outputs by name over all samples (in the model's fixed batch, if any) and the
    milliseconds of each call."""
    names = [o.name for o in sess.get_outputs()]
    n = len(next(iter(feeds.values())))
    step = _step(sess)
    types = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in sess.get_inputs()}
    parts: dict[str, list] = {k: [] for k in names}
    ms = []
    for s in range(0, n, step):
        batch = {k: np.ascontiguousarray(feeds[k][s:s + step], dtype=t) for k, t in types.items()}
        t0 = time.perf_counter_ns()
        outs = sess.run(None, batch)
        ms.append((time.perf_counter_ns() - t0) / 1e6)
        for k, o in zip(names, outs, strict=True):
            parts[k].append(o)
    return {k: np.concatenate(v) for k, v in parts.items()}, np.asarray(ms)


def quality(task: str, got: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> dict:
    """Classification: accuracy on the labels and argmax agreement with the expected outputs;
    other tasks: max abs diff and cosine to the expected vectors."""
    out = {}
    for name, y in got.items():
        want = data.get(f"expected__{name}")
        if want is None:
            continue
        a, b = y.reshape(len(y), -1).astype(np.float64), want.reshape(len(want), -1)
        out[f"{name}.max_abs_diff"] = float(np.max(np.abs(a - b))) if a.size else 0.0
        if task == "classification":
            out[f"{name}.argmax_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
        else:
            cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                              1e-12)
            out[f"{name}.cosine_mean"], out[f"{name}.cosine_min"] = float(cos.mean()), float(cos.min())
    first = next(iter(got.values()))
    if task == "classification" and "labels" in data:
        out["accuracy"] = float(np.mean(first.reshape(len(first), -1).argmax(1) == data["labels"]))
    return out


def latency_stats(ms: np.ndarray) -> dict:
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "min": float(ms.min()),
            "n": int(ms.size)}


def cmd_eval(bundle: Path, manifest: dict, threads: int | None) -> dict:
    sess, notices = open_session(bundle, manifest, threads)
    data = load_eval(bundle, manifest)
    feeds = {i.name: data[i.name] for i in sess.get_inputs() if i.name in data}
    missing = [i.name for i in sess.get_inputs() if i.name not in data]
    if missing:
        raise Refusal(f"{bundle}/eval.npz: no array for model input(s) {', '.join(missing)}")
    run_all(sess, feeds)  # warm-up pass
    got, ms = run_all(sess, feeds)
    q = quality(manifest.get("task", ""), got, data)
    lat = latency_stats(ms)
    for line in notices:
        print(f"notice    {line}")
    print(f"eval      {len(next(iter(feeds.values())))} samples, task "
          f"{manifest.get('task')}: " + ", ".join(f"{k} {v:.6g}" for k, v in q.items()))
    print(f"latency   p50 {lat['p50']:.4f}  p90 {lat['p90']:.4f}  mean {lat['mean']:.4f} ms "
          f"per call ({lat['n']} calls, {sess.get_session_options().intra_op_num_threads} "
          f"thread(s), {sess.get_providers()[0]})")
    return {"quality": q, "latency_ms": lat, "providers": sess.get_providers(), "notices": notices}


# -- predicting on raw inputs -------------------------------------------------------------------

def image_array(path: Path, pre: dict) -> np.ndarray:
    """One image as the model's input (batch of 1), following preprocess.json exactly."""
    try:
        from PIL import Image
    except ImportError:
        raise Refusal("reading images needs pillow: pip install pillow") from None
    h, w = pre.get("image_size", [None, None])
    color = str(pre.get("color", "rgb")).lower()
    try:
        img = Image.open(path)
        img = img.convert("L" if color in ("grayscale", "gray", "l") else "RGB")
    except OSError as e:
        raise Refusal(f"{path}: not a readable image ({e})") from None
    if h and w:
        img = img.resize((int(w), int(h)), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if pre.get("invert"):
        x = 255.0 - x
    x = x * float(pre.get("scale", 1 / 255))
    mean = np.asarray(pre.get("mean", [0.0]), np.float32)
    std = np.asarray(pre.get("std", [1.0]), np.float32)
    x = (x - mean) / std
    if str(pre.get("layout", "NCHW")).upper() == "NCHW":
        x = x.transpose(2, 0, 1)
    return x[None].astype(np.float32)


def text_feeds(bundle: Path, lines: list[str], pre: dict, sess) -> dict[str, np.ndarray]:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise Refusal("reading text needs tokenizers: pip install tokenizers") from None
    name = pre.get("tokenizer", "tokenizer.json")
    tok = Tokenizer.from_file(str(bundle_file(bundle, name)))
    length = int(pre.get("max_length", 128))
    tok.enable_truncation(length)
    tok.enable_padding(length=length)
    enc = tok.encode_batch(lines)
    arrays = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
              "token_type_ids": [e.type_ids for e in enc]}
    return {i.name: np.asarray(arrays[i.name], np.int64) for i in sess.get_inputs()}


def cmd_predict(bundle: Path, manifest: dict, inputs: list[str], threads: int | None) -> list:
    pre = json.loads(bundle_file(bundle, "preprocess.json").read_text(encoding="utf-8"))
    sess, notices = open_session(bundle, manifest, threads)
    for line in notices:
        print(f"notice    {line}")
    images = [p for p in inputs if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    if images and len(images) != len(inputs):
        raise Refusal(f"{', '.join(p for p in inputs if p not in images)}: not an image; give "
                      "images or text, not both")
    missing = [p for p in inputs if p.endswith(".txt") and not Path(p).is_file()]
    if missing:
        raise Refusal(f"{missing[0]}: no such text file (one sentence a line)")
    if images:
        for p in images:
            if not Path(p).is_file():
                raise Refusal(f"{p}: no such image file")
        x = np.concatenate([image_array(Path(p), pre) for p in images])
        feeds, keys = {sess.get_inputs()[0].name: x}, images
    else:
        lines = []
        for p in inputs:
            lines += (Path(p).read_text(encoding="utf-8").splitlines()
                      if p.endswith(".txt") and Path(p).is_file() else [p])
        feeds, keys = text_feeds(bundle, lines, pre, sess), lines
    got, _ = run_all(sess, feeds)
    y = next(iter(got.values()))
    labels = pre.get("labels")
    results = []
    for key, row in zip(keys, y.reshape(len(y), -1), strict=True):
        if manifest.get("task") == "classification":
            p = np.exp(row - row.max())
            p /= p.sum()
            k = int(row.argmax())
            name = labels[k] if labels and k < len(labels) else str(k)
            results.append({"input": key, "class": k, "label": name, "prob": float(p[k])})
            print(f"{key}\t{name}\t{p[k]:.4f}")
        else:
            results.append({"input": key, "vector": row.tolist()})
            print(f"{key}\t[{', '.join(f'{v:.4f}' for v in row[:4])}, ...] dim {row.size}")
    return results


# -- a latency baseline for `compress bench --baseline` --------------------------------------------

def _fingerprint(threads: int, opt_level: str, clock: str) -> dict:
    import onnxruntime as ort

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            cpu = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {"cpu": cpu, "isa": sorted(flags & _ISA), "cores": os.cpu_count(),
            "machine": platform.machine(), "ort": ort.__version__, "threads": threads,
            "opt_level": opt_level, "clock": clock}


def _timer(sess, feeds: dict, clock: str):
    tick = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns

    def run(n: int) -> np.ndarray:
        out = np.empty(n)
        for i in range(n):
            t0 = tick()
            sess.run(None, feeds)
            out[i] = (tick() - t0) / 1e6
        return out
    return run


def ratio_ci(a: list, b: list, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians of paired block medians, 95% percentile-bootstrap over whole rounds."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return float(np.median(a) / np.median(b)), float(low), float(high)


def _rounds(runs: list, calls: int, seconds: float, precision: float = 0.02):
    """ABBA rounds until the interval is narrower than ``precision`` or time is up."""
    blocks: tuple[list, list] = ([], [])
    alls: tuple[list, list] = ([], [])
    t0, look = time.perf_counter(), 20
    while True:
        order = (0, 1) if len(blocks[0]) % 2 == 0 else (1, 0)
        for j in order:
            x = runs[j](calls)
            alls[j].append(x)
            blocks[j].append(float(np.median(x)))
        n, elapsed = len(blocks[0]), time.perf_counter() - t0
        if n >= look and elapsed >= 1.0 or elapsed >= seconds:
            ci = ratio_ci(*blocks)
            if ci[2] - ci[1] <= precision * ci[0] or elapsed >= seconds:
                return ci, blocks, [np.concatenate(x) for x in alls], elapsed
            look = max(n + 1, int(np.ceil(n * 1.25)))


def cmd_bench(bundle: Path, manifest: dict, threads: int | None, seconds: float) -> dict:
    import onnxruntime as ort

    rt = manifest.get("runtime", {})
    threads = int(threads or 1)
    opt_level = rt.get("opt_level", "all")
    clock = "cpu" if threads == 1 else "wall"
    ref_name = manifest.get("bench", {}).get("reference", "bench/reference.onnx")
    if ref_name not in manifest["files"]:
        raise Refusal(f"{bundle}/manifest.json: no reference workload to bench against")
    sess, _ = open_session(bundle, {**manifest, "runtime": {**rt, "threads": threads}}, threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    ref = ort.InferenceSession(str(bundle_file(bundle, ref_name)), so,
                               providers=["CPUExecutionProvider"])
    data = load_eval(bundle, manifest)
    step = _step(sess)
    feeds = {i.name: np.ascontiguousarray(data[i.name][:step], _ORT_TYPES.get(i.type, np.float32))
             for i in sess.get_inputs()}
    ref_in = ref.get_inputs()[0]
    ref_feeds = {ref_in.name: np.random.default_rng(0).standard_normal(ref_in.shape)
                 .astype(np.float32)}
    runs = [_timer(sess, feeds, clock), _timer(ref, ref_feeds, clock)]
    for _ in range(3):  # warm-up: the last pass sizes the blocks
        per_call = [float(np.median(r(20))) for r in runs]
    calls = max(1, min(1000, round(2.0 / max(max(per_call), 1e-6))))
    (ratio, low, high), blocks, alls, elapsed = _rounds(runs, calls, seconds)
    model_path = bundle_file(bundle, rt.get("model", "model.onnx"))
    stats = [latency_stats(x) for x in alls]
    return {
        "format": "compress-latency-baseline", "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"path": str(model_path), "sha256": _sha256(model_path),
                  "bytes": model_path.stat().st_size},
        "inputs": {k: {"dtype": v.dtype.name, "shape": list(v.shape)} for k, v in feeds.items()},
        "settings": {"threads": threads, "opt_level": opt_level, "clock": clock},
        "fingerprint": _fingerprint(threads, opt_level, clock),
        "reference": {"version": manifest.get("bench", {}).get("reference_version"),
                      "sha256": manifest["files"][ref_name]["sha256"]},
        "normalized": {"ratio": ratio, "low": low, "high": high},
        "stats": {"model": stats[0], "reference": stats[1], "seconds": elapsed},
        "rounds": {"calls_per_block": calls, "model_ms": [round(x, 6) for x in blocks[0]],
                   "reference_ms": [round(x, 6) for x in blocks[1]]},
        "producer": "compress/bundle/runner.py",
    }


# -- command line ---------------------------------------------------------------------------------

def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="runner.py", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="the bundle directory (holds manifest.json)")
    p.add_argument("inputs", nargs="*", help="images, text lines or .txt files to predict on")
    p.add_argument("--eval", action="store_true", help="evaluate eval.npz and time it")
    p.add_argument("--bench", action="store_true", help="measure a latency baseline")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    p.add_argument("--threads", type=int, default=None, help="ORT intra-op threads")
    p.add_argument("--time", type=float, default=10.0, help="--bench: seconds at most")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if sum([args.eval, args.bench, bool(args.inputs)]) != 1:
            raise Refusal("give one of: --eval, --bench, or INPUT files/lines to predict on")
        manifest = load_manifest(args.bundle)
        n = verify(args.bundle, manifest)
        print(f"verified  {n} files against manifest.json (sha256)")
        if args.eval:
            result = cmd_eval(args.bundle, manifest, args.threads)
        elif args.bench:
            result = cmd_bench(args.bundle, manifest, args.threads, args.time)
            print(f"bench     model p50 {result['stats']['model']['p50']:.4f} ms, "
                  f"{result['normalized']['ratio']:.4f}x the reference workload "
                  f"(95% CI {result['normalized']['low']:.4f}-{result['normalized']['high']:.4f})")
        else:
            result = {"predictions": cmd_predict(args.bundle, manifest, args.inputs, args.threads)}
        if args.json:
            _write_json(args.json, result)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
