"""Run a compress deploy bundle on any box with ONNX Runtime: no torch, no compress.

    python runner.py BUNDLE --eval                 verify hashes, check eval.npz within tolerance
    python runner.py BUNDLE IMAGE.png ...          predict (images, or text lines / .txt files)
    python runner.py BUNDLE --bench --json OUT     latency baseline for `compress bench --baseline`
    python -m compress.bundle.runner BUNDLE ...    the same, from an installed compress

Needs onnxruntime and numpy; pillow for images and tokenizers for text, imported only then.
Every file is checked against the manifest's sha256 before use, and every key it reads must be
there (no defaults). A refusal prints one line starting with ``error:`` and exits 2; a device
check outside the manifest's tolerance prints by how much and exits 3.

This file imports nothing from compress, so a few helpers are deliberate standalone copies
(``duplicates`` lists them): the image rule of compress/data/images.py (documented in
compress/config/preprocess.py), the hashing of compress/common/files.py and the session options
of compress/common/ort.py.
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

MANIFEST_VERSIONS = (2,)
PREPROCESS_VERSIONS = (1,)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
              "tensor(bool)": np.bool_}
_ISA = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
        "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve",
        "sve2", "i8mm", "bf16", "fphp", "asimdhp"}
# the keys this runner reads, by section (compress/bundle/manifest.py documents them all)
_MANIFEST_KEYS = {
    "": ("task", "files", "runtime", "eval", "check", "preprocess", "model", "bench"),
    "runtime": ("model", "providers", "threads", "opt_level"),
    "eval": ("file", "samples", "labels"),
    "check": ("precision", "outputs"),
    "preprocess": ("file", "kind", "version"),
    "model": ("ort_optimization_style",),
    "bench": ("reference", "reference_version"),
}
_TOLERANCE_KEYS = ("output", "argmax_agreement", "max_abs_diff", "cosine_mean", "cosine_min",
                   "basis")
_PREPROCESS_KEYS = {
    "image": ("input", "layout", "color", "size", "resize", "resize_shorter", "interpolation",
              "invert", "scale", "mean", "std"),
    "text": ("tokenizer", "max_length", "padding"),
}
BORDER_FRACTION, AUTO_INVERT_ABOVE = 1 / 8, 0.5  # invert: auto (compress/config/preprocess.py)
_OPT = ("disable", "basic", "extended", "all")

CLASSIFIERS = ("classification", "sequence-classification")  # tasks whose output is logits


class Refusal(Exception):
    """The bundle or an argument cannot be used; printed as one line, exit 2."""


# -- the bundle -----------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Refusal(f"{path}: not valid JSON ({e})") from None


def _need(obj: object, keys: tuple, where: str, section: str) -> None:
    """Refuse unless ``obj`` is an object holding every key (null values are fine)."""
    if not isinstance(obj, dict):
        raise Refusal(f"{where}: {section or 'top level'} is not an object")
    for key in keys:
        if key not in obj:
            raise Refusal(f"{where}: missing key {(section + '.' if section else '') + key!r}")


def load_manifest(bundle: Path) -> dict:
    """Read BUNDLE/manifest.json, check its version and every key this runner reads."""
    if not bundle.is_dir():
        raise Refusal(f"{bundle}: not a bundle directory")
    path = bundle / "manifest.json"
    if not path.is_file():
        raise Refusal(f"{path}: missing (a bundle holds manifest.json)")
    manifest = _read_json(path)
    version = manifest.get("manifest_version") if isinstance(manifest, dict) else None
    if version not in MANIFEST_VERSIONS:
        raise Refusal(f"{path}: unknown manifest_version {version!r} (this runner reads "
                      f"{', '.join(map(str, MANIFEST_VERSIONS))})")
    for section, keys in _MANIFEST_KEYS.items():
        _need(manifest[section] if section else manifest, keys, str(path), section)
    if not isinstance(manifest["files"], dict) or not manifest["files"]:
        raise Refusal(f"{path}: no 'files' table of sha256 hashes")
    rt = manifest["runtime"]
    if not isinstance(rt["threads"], int) or rt["threads"] < 1 or rt["opt_level"] not in _OPT:
        raise Refusal(f"{path}: runtime.threads must be an integer >= 1 and runtime.opt_level "
                      f"one of {', '.join(_OPT)} (got {rt['threads']!r}, {rt['opt_level']!r})")
    outs = manifest["check"]["outputs"]
    if not isinstance(outs, list) or not outs:
        raise Refusal(f"{path}: check.outputs must list one tolerance per output")
    for i, tol in enumerate(outs):
        _need(tol, _TOLERANCE_KEYS, str(path), f"check.outputs[{i}]")
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
        if not isinstance(entry, dict) or "sha256" not in entry or "bytes" not in entry:
            raise Refusal(f"{bundle}/manifest.json: no sha256 and bytes for {name!r}")
        if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            raise Refusal(f"{path}: sha256 mismatch (file changed or corrupt)")
    used = [manifest["runtime"]["model"], manifest["preprocess"]["file"], manifest["eval"]["file"]]
    for name in used:
        if name not in manifest["files"]:
            raise Refusal(f"{bundle}/manifest.json: {name!r} is used but has no sha256 entry")
    return len(manifest["files"])


def load_preprocess(bundle: Path, manifest: dict) -> dict:
    """preprocess.json, refusing an unknown version or kind and any missing key."""
    path = bundle_file(bundle, manifest["preprocess"]["file"])
    pre = _read_json(path)
    _need(pre, ("preprocess_version", "kind", "labels"), str(path), "")
    if pre["preprocess_version"] not in PREPROCESS_VERSIONS or pre["kind"] not in _PREPROCESS_KEYS:
        raise Refusal(f"{path}: unknown preprocess_version {pre['preprocess_version']!r} or kind "
                      f"{pre['kind']!r} (this runner reads version 1, kinds image and text)")
    _need(pre, _PREPROCESS_KEYS[pre["kind"]], str(path), "")
    return pre


def open_session(bundle: Path, manifest: dict, threads: int | None = None):
    """An ORT session on the manifest's runtime model, with its providers where this build has
    them and the CPU otherwise. Returns ``(session, notices)``."""
    import onnxruntime as ort

    rt = manifest["runtime"]
    model = bundle_file(bundle, rt["model"])
    wanted = list(rt["providers"])
    have = set(ort.get_available_providers())
    providers = [p for p in wanted if p in have] or ["CPUExecutionProvider"]
    notices = [f"{p} is not in this onnxruntime build ({ort.__version__}); falling back"
               for p in wanted if p not in have]
    if "CPUExecutionProvider" not in providers:
        providers.append("CPUExecutionProvider")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or rt["threads"])
    so.inter_op_num_threads = 1
    so.graph_optimization_level = dict(zip(_OPT, (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    ), strict=True))[rt["opt_level"]]
    so.log_severity_level = 3
    if model.suffix == ".ort" and manifest["model"]["ort_optimization_style"] == "runtime":
        # replay the optimizations saved in the .ort (the file's hash was verified above)
        so.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    return ort.InferenceSession(str(model), so, providers=providers), notices


def load_eval(bundle: Path, manifest: dict) -> dict[str, np.ndarray]:
    path = bundle_file(bundle, manifest["eval"]["file"])
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -- running and checking -------------------------------------------------------------------------

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


def compare(got: np.ndarray, want: np.ndarray) -> dict:
    """Argmax agreement, max abs diff and cosine (mean, min) of ``got`` against ``want``."""
    a = got.reshape(len(got), -1).astype(np.float64)
    b = want.reshape(len(want), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"argmax_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(a - b))) if a.size else 0.0,
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def check_outputs(got: dict[str, np.ndarray], data: dict[str, np.ndarray],
                  tolerances: list[dict]) -> list[dict]:
    """One row per (output, measure) with a tolerance: value, limit, whether it holds and the
    margin by which it misses (0 when it holds)."""
    rows = []
    for tol in tolerances:
        name = tol["output"]
        if name not in got or f"expected__{name}" not in data:
            raise Refusal(f"check: no output {name!r} or no expected__{name} in eval.npz")
        measured = compare(got[name], data[f"expected__{name}"])
        for key in ("argmax_agreement", "max_abs_diff", "cosine_mean", "cosine_min"):
            limit = tol[key]
            if limit is None:
                continue
            value, at_most = measured[key], key == "max_abs_diff"
            miss = max(0.0, value - limit) if at_most else max(0.0, limit - value)
            rows.append({"output": name, "measure": key, "value": value, "limit": float(limit),
                         "rule": "<=" if at_most else ">=", "ok": miss == 0.0, "by": miss})
    return rows


def quality(task: str, got: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> dict:
    """Accuracy on the labels (classification) and every comparison with expected outputs."""
    out = {}
    for name, y in got.items():
        want = data.get(f"expected__{name}")
        if want is not None:
            c = compare(y, want)
            keys = ("argmax_agreement", "max_abs_diff") if task in CLASSIFIERS else \
                ("max_abs_diff", "cosine_mean", "cosine_min")
            out.update({f"{name}.{k}": c[k] for k in keys})
    first = next(iter(got.values()))
    if task in CLASSIFIERS and "labels" in data:
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
    q = quality(manifest["task"], got, data)
    rows = check_outputs(got, data, manifest["check"]["outputs"])
    lat = latency_stats(ms)
    for line in notices:
        print(f"notice    {line}")
    print(f"eval      {len(next(iter(feeds.values())))} samples, task "
          f"{manifest['task']}: " + ", ".join(f"{k} {v:.6g}" for k, v in q.items()))
    for r in rows:
        verdict = "ok" if r["ok"] else f"FAILED by {r['by']:.6g}"
        print(f"check     {r['output']}.{r['measure']} {r['value']:.6g} {r['rule']} "
              f"{r['limit']:.6g} ({manifest['check']['precision']}): {verdict}")
    print(f"latency   p50 {lat['p50']:.4f}  p90 {lat['p90']:.4f}  mean {lat['mean']:.4f} ms "
          f"per call ({lat['n']} calls, {sess.get_session_options().intra_op_num_threads} "
          f"thread(s), {sess.get_providers()[0]})")
    return {"quality": q, "check": {"precision": manifest["check"]["precision"], "rows": rows,
                                    "passed": all(r["ok"] for r in rows)},
            "latency_ms": lat, "providers": sess.get_providers(), "notices": notices}


# -- predicting on raw inputs -------------------------------------------------------------------

def _needs_invert(img, pre: dict) -> bool:
    if pre["invert"] != "auto":
        return pre["invert"] == "always"
    a = np.asarray(img.convert("L"), dtype=np.float64)
    h, w = a.shape
    bh, bw = max(1, int(h * BORDER_FRACTION)), max(1, int(w * BORDER_FRACTION))
    mask = np.ones_like(a, dtype=bool)
    mask[bh:h - bh, bw:w - bw] = False
    return float(a[mask].mean()) > AUTO_INVERT_ABOVE * 255


def _resize_band(band, pre: dict, filters: dict):
    band, (h, w) = band.convert("F"), pre["size"]
    resample = filters[pre["interpolation"]]
    if pre["resize"] == "stretch":
        return band.resize((w, h), resample)
    short, (iw, ih) = pre["resize_shorter"], band.size
    nw, nh = (short, max(short, round(ih * short / iw))) if iw <= ih else \
        (max(short, round(iw * short / ih)), short)
    band = band.resize((nw, nh), resample)
    left, top = (nw - w) // 2, (nh - h) // 2
    return band.crop((left, top, left + w, top + h))


def image_array(path: Path, pre: dict) -> np.ndarray:
    """One image file as the model's input (batch of 1), following preprocess.json exactly."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise Refusal("reading images needs pillow: pip install pillow") from None
    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
    if pre["color"] not in ("grayscale", "rgb") or pre["interpolation"] not in filters \
            or pre["resize"] not in ("stretch", "shorter_side_center_crop"):
        raise Refusal(f"preprocess.json: unknown color {pre['color']!r}, interpolation "
                      f"{pre['interpolation']!r} or resize {pre['resize']!r}")
    try:
        with Image.open(path) as raw:
            img = raw.convert("L" if pre["color"] == "grayscale" else "RGB")
    except OSError as e:
        raise Refusal(f"{path}: not a readable image ({e})") from None
    if _needs_invert(img, pre):
        img = ImageOps.invert(img)
    x = np.stack([np.asarray(_resize_band(b, pre, filters), np.float32) for b in img.split()], -1)
    x = (x * np.float32(pre["scale"]) - np.asarray(pre["mean"], np.float32)) \
        / np.asarray(pre["std"], np.float32)
    if pre["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def text_feeds(bundle: Path, lines: list[str], pre: dict, sess) -> list[dict[str, np.ndarray]]:
    """One feed per call: each sentence alone, padded to itself (``padding: longest``) or to
    ``max_length``; a model with a fixed sequence length gets that length."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise Refusal("reading text needs tokenizers: pip install tokenizers") from None
    tok = Tokenizer.from_file(str(bundle_file(bundle, pre["tokenizer"])))
    seq = sess.get_inputs()[0].shape[1] if len(sess.get_inputs()[0].shape) > 1 else None
    fixed = seq if isinstance(seq, int) and seq > 0 else None
    length = fixed or int(pre["max_length"])
    tok.enable_truncation(length)
    if fixed or pre["padding"] == "max_length":
        tok.enable_padding(length=length)
    else:  # tokenizer.json may carry its own padding (all-MiniLM-L6-v2's pads to 128)
        tok.no_padding()
    feeds = []
    for enc in tok.encode_batch(lines):
        arrays = {"input_ids": enc.ids, "attention_mask": enc.attention_mask,
                  "token_type_ids": enc.type_ids}
        feeds.append({i.name: np.asarray([arrays[i.name]], np.int64) for i in sess.get_inputs()})
    return feeds


def _predict_outputs(bundle: Path, pre: dict, sess, inputs: list[str]) -> tuple[list, np.ndarray]:
    images = [p for p in inputs if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    if images and len(images) != len(inputs):
        raise Refusal(f"{', '.join(p for p in inputs if p not in images)}: not an image; give "
                      "images or text, not both")
    missing = [p for p in inputs if p.endswith(".txt") and not Path(p).is_file()]
    if missing:
        raise Refusal(f"{missing[0]}: no such text file (one sentence a line)")
    if images:
        if pre["kind"] != "image":
            raise Refusal(f"{images[0]}: this bundle's model takes text, not images")
        for p in images:
            if not Path(p).is_file():
                raise Refusal(f"{p}: no such image file")
        x = np.concatenate([image_array(Path(p), pre) for p in images])
        return images, run_all(sess, {pre["input"]: x})[0][sess.get_outputs()[0].name]
    if pre["kind"] != "text":
        raise Refusal(f"{inputs[0]}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                      "this bundle's model takes images")
    lines = []
    for p in inputs:
        lines += (Path(p).read_text(encoding="utf-8").splitlines()
                  if p.endswith(".txt") and Path(p).is_file() else [p])
    ys = [sess.run(None, f)[0] for f in text_feeds(bundle, lines, pre, sess)]
    return lines, np.concatenate(ys)


def cmd_predict(bundle: Path, manifest: dict, inputs: list[str], threads: int | None) -> list:
    pre = load_preprocess(bundle, manifest)
    sess, notices = open_session(bundle, manifest, threads)
    for line in notices:
        print(f"notice    {line}")
    keys, y = _predict_outputs(bundle, pre, sess, inputs)
    labels = pre["labels"]
    results = []
    for key, row in zip(keys, y.reshape(len(y), -1), strict=True):
        if manifest["task"] in CLASSIFIERS:
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

    rt = manifest["runtime"]
    threads = int(threads or 1)
    opt_level = rt["opt_level"]
    clock = "cpu" if threads == 1 else "wall"
    ref_name = manifest["bench"]["reference"]
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
    model_path = bundle_file(bundle, rt["model"])
    stats = [latency_stats(x) for x in alls]
    return {
        "format": "compress-latency-baseline", "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"path": str(model_path), "sha256": _sha256(model_path),
                  "bytes": model_path.stat().st_size},
        "inputs": {k: {"dtype": v.dtype.name, "shape": list(v.shape)} for k, v in feeds.items()},
        "settings": {"threads": threads, "opt_level": opt_level, "clock": clock},
        "fingerprint": _fingerprint(threads, opt_level, clock),
        "reference": {"version": manifest["bench"]["reference_version"],
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
    p.add_argument("--eval", action="store_true",
                   help="evaluate eval.npz against the manifest's tolerance (exit 3 outside it)")
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
    if args.eval and not result["check"]["passed"]:
        failed = [f"{r['output']}.{r['measure']} by {r['by']:.6g}"
                  for r in result["check"]["rows"] if not r["ok"]]
        print(f"error: outside the bundle's {result['check']['precision']} tolerance: "
              + ", ".join(failed), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
