"""App notes generated from the bundle itself: the input names, shapes, preprocessing and
session settings an Android, iOS or edge developer types, taken from ``preprocess.json`` and the
manifest's ``runtime`` section, so a note can never disagree with the bundle it sits in. The
bundle's README holds them; ``compress deploy`` writes ``APP.md`` for its target."""

from __future__ import annotations

from typing import Any


def _fraction(x: float) -> str:
    inv = 1 / x
    return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-6 else f"{x:g}"


def preprocessing_lines(pre: dict[str, Any]) -> list[str]:
    """The preprocessing in words, one step a line, from preprocess.json."""
    if pre["kind"] == "text":
        pad = ("no padding (one sentence per call)" if pre["padding"] == "longest"
               else f"padded to {pre['max_length']}")
        return [f"encode with `{pre['tokenizer']}` (tokenizers library), truncate to "
                f"{pre['max_length']} tokens, {pad}, attention_mask 1 on tokens"]
    h, w = pre["size"]
    resize = (f"stretch to {w}x{h} (width x height)" if pre["resize"] == "stretch" else
              f"scale the shorter side to {pre['resize_shorter']}, crop the centre {w}x{h}")
    invert = {"never": [], "always": ["invert: p = 255 - p"],
              "auto": ["invert (p = 255 - p) when the border is light: the model saw light "
                       "strokes on a dark background"]}[pre["invert"]]
    return [f"decode, convert to {pre['color']} ({'1 channel' if pre['color'] == 'grayscale' else 'R, G, B'})",
            *invert, f"{resize}, {pre['interpolation']} filter",
            f"x = (p * {_fraction(pre['scale'])} - mean) / std per channel, mean {pre['mean']}, "
            f"std {pre['std']} (p: 8-bit pixel 0..255)",
            f"layout {pre['layout']}, float32, batch 1"]


def _shape(io: dict, name: str) -> list:
    entry = next(i for i in io["inputs"] if i["name"] == name)
    return [1 if isinstance(d, str) else d for d in entry["shape"]]


def kotlin(io: dict, pre: dict, runtime: dict) -> str:
    name, out = io["inputs"][0]["name"], io["outputs"][0]["name"]
    shape = ", ".join(str(d) for d in _shape(io, name))
    return f"""```kotlin
val opts = OrtSession.SessionOptions().apply {{
    setIntraOpNumThreads({runtime['threads']})
    addConfigEntry("session.enable_saved_runtime_optimizations", "1")
}}
val session = env.createSession(context.assets.open("{phone_model(runtime)}").readBytes(), opts)
val input = OnnxTensor.createTensor(env, FloatBuffer.wrap(x), longArrayOf({shape}))
session.run(mapOf("{name}" to input)).use {{ out -> val y = out.get("{out}").get().value }}
```"""


def phone_model(runtime: dict) -> str:
    """The file a phone app opens: the ORT-format model every bundle ships beside ``model.onnx``
    (the session option ``enable_saved_runtime_optimizations`` is for ORT-format files)."""
    model = runtime["model"]
    return model if model.endswith(".ort") else model.rsplit(".", 1)[0] + ".ort"


def swift(io: dict, pre: dict, runtime: dict) -> str:
    name, out = io["inputs"][0]["name"], io["outputs"][0]["name"]
    shape = ", ".join(str(d) for d in _shape(io, name))
    return f"""```swift
let options = try ORTSessionOptions()  // open "{phone_model(runtime)}" from the app bundle
try options.setIntraOpNumThreads({runtime['threads']})
try options.addConfigEntry(withKey: "session.enable_saved_runtime_optimizations", value: "1")
let input = try ORTValue(tensorData: data, elementType: .float, shape: [{shape}])
let out = try session.run(withInputs: ["{name}": input], outputNames: ["{out}"], runOptions: nil)
```"""


def app_notes(io: dict, pre: dict, runtime: dict, target: str | None = None) -> str:
    """Markdown for app developers: inputs, preprocessing, session settings, snippets."""
    ins = "\n".join(f"- input `{i['name']}`: {i['dtype']} {i['shape']}" for i in io["inputs"])
    outs = "\n".join(f"- output `{o['name']}`: {o['dtype']} {o['shape']}" for o in io["outputs"])
    steps = "\n".join(f"{k}. {line}" for k, line in enumerate(preprocessing_lines(pre), 1))
    providers = " > ".join(runtime["providers"])
    parts = [f"{ins}\n{outs}", f"Preprocessing (`preprocess.json`):\n\n{steps}",
             f"Session: load `{runtime['model']}`, {runtime['threads']} intra-op thread(s) (the "
             f"setting latency was measured with), graph optimization {runtime['opt_level']}, "
             f"providers {providers}."]
    if pre["kind"] == "image" and target in (None, "android"):
        parts.append("Android (Kotlin, onnxruntime-android):\n\n" + kotlin(io, pre, runtime))
    if pre["kind"] == "image" and target in (None, "ios"):
        parts.append("iOS (Swift, onnxruntime-objc):\n\n" + swift(io, pre, runtime))
    parts.append("Any box with Python: `python runner.py BUNDLE --eval` (hashes, then the "
                 "device check), `python runner.py BUNDLE INPUT ...` (predictions).")
    return "\n\n".join(parts) + "\n"
