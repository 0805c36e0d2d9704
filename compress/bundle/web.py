"""``compress deploy RUN_DIR --target web``: the bundle as a folder a web page serves.

``RUN_DIR/deploy/web/`` holds the model for onnxruntime-web (the format ``profiles/web.yaml``
names, chosen by measurement), ``compress-web.mjs`` (an ES module: loads the model, runs the
bundle's preprocessing and its device check), ``index.html`` (a demo page; with ``?check=1`` it
runs the eval set and the check and times batch-1 calls), the eval samples as ``eval.json`` +
``eval.bin`` (raw little-endian arrays a page can read), raw-input samples for the preprocessing
(``samples/``: PNG images, or sentences with their token ids), the pinned npm files under
``vendor/`` (onnxruntime-web's WASM build, the tokenizer), and a manifest of sha256 hashes.

The npm packages come from ``make setup-web`` (``deploy/web/node_modules``, versions pinned in
``deploy/web/package.json`` and checked here against the profile).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compress.errors import InputError

WEB_ASSETS = Path(__file__).resolve().parent / "web"  # package data: the module and the page
PROFILE = Path(__file__).resolve().parent / "profiles" / "web.yaml"
NODE_MODULES_ENV = "COMPRESS_WEB_NODE_MODULES"
# what the page loads from each npm package (a WASM-only onnxruntime-web build: no WebGPU code)
VENDOR = {"onnxruntime-web": ["dist/ort.wasm.min.mjs", "dist/ort-wasm-simd-threaded.mjs",
                              "dist/ort-wasm-simd-threaded.wasm"],
          "@huggingface/tokenizers": ["dist/tokenizers.min.mjs"]}
SAMPLE_IMAGE_SIZE = (37, 45)  # (height, width) of the sample PNGs: not the model's, so the
                              # page's resize is exercised as well as scale, mean and std


class WebProfile(BaseModel):
    """``profiles/web.yaml``: the browser target."""

    model_config = ConfigDict(extra="forbid")

    description: str
    model_format: Literal["ort", "onnx"] = Field(
        description="The file onnxruntime-web loads (measured: see the profile's comment).")
    threads: int = Field(1, ge=1, le=64, description="WASM threads (more need COOP/COEP).")
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    packages: dict[str, str] = Field(description="npm package -> pinned version.")
    samples: int = Field(8, ge=0, le=1000, description="Raw-input samples for the page's "
                                                       "preprocessing check.")


def load_profile() -> WebProfile:
    import yaml

    try:
        return WebProfile.model_validate(yaml.safe_load(PROFILE.read_text(encoding="utf-8")))
    except yaml.YAMLError as e:
        raise InputError(f"{PROFILE}: not valid YAML ({str(e).splitlines()[0]})") from None
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"{PROFILE}: {'.'.join(map(str, err['loc'])) or 'top level'}: "
                         f"{err['msg']}") from None


def node_modules() -> Path:
    """Where ``make setup-web`` put the npm packages (or ``$COMPRESS_WEB_NODE_MODULES``)."""
    env = os.environ.get(NODE_MODULES_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "deploy" / "web" / "node_modules"


def vendor_files(profile: WebProfile) -> dict[str, Path]:
    """``vendor/<file>`` -> source path, after checking each package's pinned version."""
    root = node_modules()
    out: dict[str, Path] = {}
    for pkg, files in VENDOR.items():
        meta = root / pkg / "package.json"
        want = profile.packages.get(pkg)
        have = json.loads(meta.read_text())["version"] if meta.is_file() else None
        if have is None or have != want:
            found = f"found {have}" if have else "not installed"
            raise InputError(f"{root / pkg}: npm package {pkg} {want} is needed ({found}); run "
                             f"`make setup-web` (or set {NODE_MODULES_ENV})")
        out.update({Path(f).name: root / pkg / f for f in files})
    return out


def write_eval(bundle: Path, manifest: dict, tmp: Path) -> dict[str, Any]:
    """eval.npz as ``eval.bin`` (arrays back to back, little-endian) and ``eval.json`` (index)."""
    name = manifest["eval"]["file"]
    with np.load(bundle / name, allow_pickle=False) as z:
        arrays = {k: np.ascontiguousarray(z[k]) for k in z.files}
    index, offset = {}, 0
    with open(tmp / "eval.bin", "wb") as f:
        for k, a in arrays.items():
            a = a.astype(a.dtype.newbyteorder("<"))
            data = a.tobytes()
            index[k] = {"dtype": a.dtype.name, "shape": list(a.shape), "offset": offset,
                        "bytes": len(data)}
            f.write(data)
            offset += len(data)
    inputs = [i["name"] for i in manifest["io"]["inputs"]]
    doc = {"data": "eval.bin", "samples": int(len(arrays[inputs[0]])), "inputs": inputs,
           "arrays": index, "source": name}
    (tmp / "eval.json").write_text(json.dumps(doc, indent=1) + "\n")
    return arrays


def _image_samples(bundle: Path, pre: dict, arrays: dict, model: Path, tmp: Path,
                   n: int) -> dict[str, Any]:
    """PNG files a camera could give (8-bit, another size than the model's) and the Python
    rule's tensors for them (``compress.data.images.apply_image``): the page must match them."""
    from PIL import Image

    from compress.config.preprocess import ImagePreprocess
    from compress.data.images import apply_image

    rec = ImagePreprocess.model_validate({k: v for k, v in pre.items()
                                          if k in ImagePreprocess.model_fields})
    x = arrays[rec.input][:n].astype(np.float64)
    if rec.layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    pix = np.clip(np.rint((x * np.asarray(rec.std) + np.asarray(rec.mean)) / rec.scale), 0, 255)
    (tmp / "samples").mkdir()
    files, refs = [], []
    for i, p in enumerate(pix.astype(np.uint8)):
        img = Image.fromarray(p[..., 0] if rec.color == "grayscale" else p,
                              "L" if rec.color == "grayscale" else "RGB")
        img = img.resize(SAMPLE_IMAGE_SIZE[::-1], Image.BILINEAR)
        name = f"samples/{i:03d}.png"
        img.save(tmp / name)
        with Image.open(tmp / name) as back:
            refs.append(apply_image(back, rec))
        files.append(name)
    ref = np.stack(refs).astype(np.float32)
    pred = _argmax(model, rec.input, ref)
    return {"kind": "image", "files": files, "size": list(SAMPLE_IMAGE_SIZE),
            "reference": ref.reshape(len(ref), -1).tolist(), "reference_shape": list(ref.shape),
            "reference_argmax": pred}


def _argmax(model: Path, name: str, x: np.ndarray) -> list[int]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return [int(sess.run(None, {name: x[i:i + 1]})[0].reshape(-1).argmax()) for i in range(len(x))]


def _text_samples(bundle: Path, pre: dict, arrays: dict, n: int) -> dict[str, Any]:
    """Sentences of the eval set (its token ids decoded) whose Python encoding gives back those
    ids exactly: the page's tokenizer must give the same ids."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundle / pre.get("tokenizer", "tokenizer.json")))
    tok.no_padding()
    tok.enable_truncation(int(pre["max_length"]))
    ids, mask = arrays["input_ids"], arrays["attention_mask"]
    texts, want, rows, tried = [], [], [], 0
    for i, (row, m) in enumerate(zip(ids, mask, strict=True)):
        if len(texts) >= n:
            break
        tried += 1
        kept = [int(v) for v, b in zip(row, m, strict=True) if b]
        text = tok.decode(kept, skip_special_tokens=True)
        if tok.encode(text).ids == kept:
            texts.append(text)
            want.append(kept)
            rows.append(i)
    return {"kind": "text", "texts": texts, "ids": want, "rows": rows,
            "round_trip": f"{len(texts)}/{tried}"}


def write_samples(bundle: Path, pre: dict, arrays: dict, model: Path, tmp: Path,
                  n: int) -> dict[str, Any]:
    if pre.get("kind") == "text" or "input_ids" in arrays:
        doc = _text_samples(bundle, pre, arrays, n)
    else:
        doc = _image_samples(bundle, pre, arrays, model, tmp, n)
    (tmp / "samples.json").write_text(json.dumps(doc) + "\n")
    return doc


def _model_file(bundle: Path, manifest: dict, fmt: str) -> str:
    """The bundle's file for ``fmt``: the .ort (cut for ONNX Runtime Mobile) or the portable
    .onnx (``mobile_onnx``: fixed shapes where the bundle fixed them)."""
    name = manifest["model"]["ort"] if fmt == "ort" else manifest["model"]["mobile_onnx"]
    if not (bundle / name).is_file():
        raise InputError(f"{bundle / name}: missing (the bundle lists it as model.{fmt})")
    return name


def deploy_web(run_dir: Path, bundle: Path, verified) -> tuple[Path, Any]:
    """Write ``RUN_DIR/deploy/web/`` from the bundle ``verified`` (its hashes checked, a
    ``Manifest``); returns ``(folder, the folder's Manifest)``."""
    from compress.bundle.manifest import Manifest
    from compress.bundle.writer import staged_folder
    from compress.common.files import sha256_file, write_json

    manifest = verified.dump()
    profile = load_profile()
    vendor = vendor_files(profile)
    out = Path(run_dir) / "deploy" / "web"
    with staged_folder(out) as tmp:
        model = _model_file(bundle, manifest, profile.model_format)
        pre = json.loads((bundle / "preprocess.json").read_text(encoding="utf-8"))
        keep = {model, "preprocess.json", manifest["eval"]["file"], *pre.get("tokenizer_files", [])}
        for name in sorted(keep):
            shutil.copyfile(bundle / name, tmp / name)
        arrays = write_eval(bundle, manifest, tmp)
        samples = write_samples(bundle, pre, arrays, bundle / manifest["model"]["mobile_onnx"],
                                tmp, profile.samples)
        for name in ("compress-web.mjs", "index.html"):
            shutil.copyfile(WEB_ASSETS / name, tmp / name)
        (tmp / "vendor").mkdir()
        for name, src in vendor.items():
            shutil.copyfile(src, tmp / "vendor" / name)
        manifest = _web_manifest(manifest, profile, model, samples)
        (tmp / "APP.md").write_text(app_notes(manifest, pre), encoding="utf-8")
        manifest["files"] = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p),
                                                             "bytes": p.stat().st_size}
                             for p in sorted(tmp.rglob("*")) if p.is_file()}
        typed = Manifest.model_validate(manifest)
        write_json(tmp / "manifest.json", typed.dump())
    return out, typed


def _web_manifest(manifest: dict, profile: WebProfile, model: str, samples: dict) -> dict:
    m = json.loads(json.dumps(manifest))
    m["runtime"] = {"model": model, "providers": ["wasm"], "threads": profile.threads,
                    "opt_level": profile.graph_optimization_level}
    notices = []
    if samples["kind"] == "text" and len(samples["texts"]) < profile.samples:
        notices.append(f"only {samples['round_trip']} eval sentences decode and re-encode to the "
                       "same token ids; the page checks the tokenizer on those")
    m["target"] = {"name": "web", "notices": notices, "profile": {
        **profile.model_dump(), "platform": m["model"]["ort_platform"],
        "ort_optimization_style": m["model"]["ort_optimization_style"],
        "module": "compress-web.mjs", "page": "index.html", "eval_index": "eval.json",
        "samples": "samples.json", "wasm_paths": "vendor/"}}
    return m


def app_notes(manifest: dict, pre: dict) -> str:
    """APP.md: what a web developer needs, read from this folder's manifest and preprocess.json
    (the preprocessing in the same words as the other targets' notes)."""
    from compress.bundle.notes import preprocessing_lines

    io, rt, prof = manifest["io"], manifest["runtime"], manifest["target"]["profile"]
    rows = "\n".join(f"| {kind} | `{t['name']}` | {t['dtype']} | {t['shape']} |"
                     for kind in ("inputs", "outputs") for t in io[kind])
    steps = "\n".join(f"{k}. {line}" for k, line in enumerate(preprocessing_lines(pre), 1))
    check = manifest["check"]
    tol = "\n".join(f"- `{t['output']}`: " + ", ".join(
        f"{k} {'<=' if k == 'max_abs_diff' else '>='} {t[k]:.6g}"
        for k in ("argmax_agreement", "max_abs_diff", "cosine_mean", "cosine_min")
        if t[k] is not None) + f" ({t['basis']})" for t in check["outputs"])
    first = io["inputs"][0]
    call = ("bundle.classify(imageBitmap)  // Float32Array of "
            f"{io['outputs'][0]['shape'][-1]} logits" if pre["kind"] == "image" else
            f"bundle.embed(\"a sentence\")  // Float32Array of {io['outputs'][0]['shape'][-1]}")
    return f"""# {prof['description']}

Model `{rt['model']}` for onnxruntime-web {prof['packages']['onnxruntime-web']} (WASM,
{rt['threads']} thread(s), graph optimization `{rt['opt_level']}`).

| | name | dtype | shape |
|---|---|---|---|
{rows}

Preprocessing (`preprocess.json`, done by `compress-web.mjs`):

{steps}

```js
import {{ loadBundle }} from "./compress-web.mjs";  // imports onnxruntime-web, @huggingface/tokenizers
const bundle = await loadBundle("./");               // reads manifest.json, preprocess.json
const y = await {call}
// or by hand: bundle.run({{ {first['name']}: new ort.Tensor(...) }})
```

Device check (`manifest.json` `check`, precision {check['precision']}; `index.html?check=1`
runs it on `eval.json` + `eval.bin`):
{tol}
"""
