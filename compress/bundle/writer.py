"""Write a deploy bundle: the model as ONNX and ORT format, its preprocessing, eval samples with
expected outputs, mobile readiness, and a manifest of sha256 hashes a consumer can verify.

The bundle is built in a temporary sibling folder and renamed into place, so a crash never
leaves a half bundle, and an existing bundle is replaced only once the new one is complete.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compress.bundle.manifest import MANIFEST_VERSION, Latency, Manifest, Quality
from compress.bundle.ort_format import (
    OPS_CONFIG,
    convert_to_ort,
    model_io,
    ort_graph_ops,
    run_model,
)
from compress.common.env import versions
from compress.common.files import sha256_file, umask, write_json
from compress.config.preprocess import PREPROCESS_VERSION, ImagePreprocess, Preprocess
from compress.errors import InputError, StageError

# The torch-free runner: a module of this package (so a wheel ships it) that imports nothing
# from it, copied as one standalone file into every bundle.
RUNNER = Path(__file__).resolve().with_name("runner.py")


@dataclass
class BundleSpec:
    """What the bundle says about the model; every value comes from the run, none is re-typed.

    Attributes:
        task: the model's task (``classification``, ``embedding``).
        preprocess: the data source's preprocessing record, written as ``preprocess.json``
            (with the model's inputs, outputs and class names).
        eval_inputs: sample inputs, one array per model input name, batch first.
        quality: the headline metric measured in the run (``Quality`` with None values when the
            run did not measure this model).
        latency: latency measured in the run and the session settings (``threads``,
            ``opt_level``) it was measured with; the bundle's runtime section takes them.
        precision: ``fp32``, ``int8`` or ``mixed``: picks the device check's tolerance.
        expected: expected outputs per output name (computed on ``model.onnx`` when empty).
        labels: true labels of the eval samples (classification), or None.
        class_names: names of the classes, index = class id, or None.
        config_sha256: the pipeline config's hash.
        platform: ORT-format target, ``arm`` (phones) or ``amd64``.
        io: ``{"inputs": [{"name", "shape", "dtype"}], "outputs": [...]}``; read from the model
            when None, checked against it when given.
        fix_shapes: fix a dynamic batch to 1 in the mobile variant.
        ort_style: ``runtime`` keeps portable ops in the .ort (runtime optimizations are
            replayed only where the CPU EP runs); ``fixed`` bakes ``ort_level`` in.
        ort_level: ORT graph optimization level of the conversion.
        extra_files: more files to ship (e.g. ``{"tokenizer.json": path}``).
        training_data: the table of the text the model learned from (source, role, package,
            licence, sentences; ``CorpusRecord.markdown``) for the README, or None.
    """

    task: str
    preprocess: Preprocess
    eval_inputs: dict[str, np.ndarray]
    quality: Quality
    latency: Latency
    precision: Literal["fp32", "int8", "mixed"] = "fp32"
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    config_sha256: str = ""
    platform: Literal["arm", "amd64"] = "arm"
    io: dict[str, list[dict[str, Any]]] | None = None
    fix_shapes: bool = True
    ort_style: Literal["runtime", "fixed"] = "runtime"
    ort_level: Literal["basic", "extended", "all"] = "all"
    extra_files: dict[str, Path] = field(default_factory=dict)
    training_data: str | None = None


@dataclass
class BundleResult:
    """Where the bundle went and what it holds (``manifest`` is the JSON written)."""

    path: Path
    manifest: dict[str, Any]

    @property
    def readiness(self) -> dict[str, Any]:
        return self.manifest["mobile"]["readiness"]

    def sizes(self) -> dict[str, int]:
        return {name: f["bytes"] for name, f in self.manifest["files"].items()}


def _check_io(spec: BundleSpec, io: dict) -> None:
    names = [i["name"] for i in io["inputs"]]
    if spec.io is not None:
        given = [i["name"] for i in spec.io.get("inputs", [])]
        if given != names:
            raise InputError(f"bundle io.inputs {given} differ from the model's inputs {names}")
    missing = [n for n in names if n not in spec.eval_inputs]
    if missing or not spec.eval_inputs:
        raise InputError(f"bundle eval_inputs: need one array per model input {names} "
                         f"(missing: {', '.join(missing) or 'all'})")
    sizes = {k: len(v) for k, v in spec.eval_inputs.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(f"bundle eval_inputs: arrays differ in sample count {sizes}")
    pre = spec.preprocess
    if isinstance(pre, ImagePreprocess):
        model_in = next((i for i in io["inputs"] if i["name"] == pre.input), None)
        if model_in is None or len(io["inputs"]) != 1:
            raise InputError(f"preprocess.input: the image record feeds {pre.input!r}; the "
                             f"model's inputs are {names}")
        if [d for d in model_in["shape"][1:]] != list(pre.input_shape) and \
                all(isinstance(d, int) for d in model_in["shape"][1:]):
            raise InputError(f"preprocess.size: the record makes {list(pre.input_shape)} "
                             f"({pre.layout}), the model takes {model_in['shape'][1:]}")
    elif not set(names) <= {"input_ids", "attention_mask", "token_type_ids"}:
        raise InputError(f"preprocess: a text record feeds input_ids, attention_mask and "
                         f"token_type_ids; the model's inputs are {names}")


def _write_eval(tmp: Path, spec: BundleSpec, model: Path) -> dict[str, np.ndarray]:
    inputs = {k: np.ascontiguousarray(v) for k, v in spec.eval_inputs.items()}
    got = run_model(model, inputs)
    expected = spec.expected or got
    for name, want in expected.items():
        if name not in got:
            raise InputError(f"bundle expected: no model output named {name!r} "
                             f"(outputs: {', '.join(got)})")
        if want.shape != got[name].shape or not np.allclose(got[name], want, rtol=1e-4, atol=1e-4):
            raise StageError(f"model.onnx does not reproduce the expected output {name!r} "
                             "on the eval samples (max abs diff "
                             f"{np.max(np.abs(got[name] - want)) if want.shape == got[name].shape else 'shape'})",
                             "package")
    arrays = {**inputs, **{f"expected__{k}": np.asarray(v) for k, v in expected.items()}}
    if spec.labels is not None:
        arrays["labels"] = np.asarray(spec.labels)
    np.savez_compressed(tmp / "eval.npz", **arrays)
    return got


def _runtime_section(spec: BundleSpec) -> dict[str, Any]:
    return {"model": "model.onnx", "providers": ["CPUExecutionProvider"],
            "threads": spec.latency.threads, "opt_level": spec.latency.opt_level}


def _check_ort(ort_path: Path, spec: BundleSpec, expected: dict[str, np.ndarray]):
    """The device check, built from the task and precision, must hold for model.ort here."""
    from compress.bundle.check import tolerances
    from compress.bundle.runner import check_outputs

    check = tolerances(spec.task, spec.precision, expected)
    got = run_model(ort_path, {k: np.ascontiguousarray(v) for k, v in spec.eval_inputs.items()})
    rows = check_outputs(got, {f"expected__{k}": v for k, v in expected.items()},
                         [t.model_dump() for t in check.outputs])
    failed = [f"{r['output']}.{r['measure']} {r['value']:.6g} (limit {r['limit']:.6g})"
              for r in rows if not r["ok"]]
    if failed:
        raise StageError(f"model.ort is outside the bundle's own {spec.precision} tolerance: "
                         + ", ".join(failed), "package")
    return check


def _preprocess_json(spec: BundleSpec, io: dict) -> dict[str, Any]:
    return {"preprocess_version": PREPROCESS_VERSION, **spec.preprocess.model_dump(mode="json"),
            "labels": None if spec.class_names is None else list(spec.class_names),
            "inputs": io["inputs"], "outputs": io["outputs"]}


def _build(model_path: Path, tmp: Path, spec: BundleSpec) -> dict[str, Any]:
    from compress import __version__
    from compress.bench.reference import REFERENCE_VERSION, reference_model_bytes
    from compress.bundle.mobile import make_mobile_variant, readiness

    shutil.copyfile(model_path, tmp / "model.onnx")
    io = model_io(tmp / "model.onnx")
    _check_io(spec, io)
    got = _write_eval(tmp, spec, tmp / "model.onnx")
    expected = spec.expected or got
    first = {k: np.ascontiguousarray(v[:1]) for k, v in spec.eval_inputs.items()}
    mobile = tmp / "model.mobile.onnx"
    fixes = make_mobile_variant(tmp / "model.onnx", mobile, first, spec.fix_shapes)
    if sha256_file(mobile) == sha256_file(tmp / "model.onnx"):
        mobile.unlink()
        mobile = tmp / "model.onnx"
    ort_path, _ = convert_to_ort(mobile, tmp, spec.platform, spec.ort_style, spec.ort_level)
    check = _check_ort(ort_path, spec, expected)
    ready = readiness(mobile)
    before = readiness(tmp / "model.onnx") if fixes else ready
    write_json(tmp / "preprocess.json", _preprocess_json(spec, io))
    (tmp / "bench").mkdir()
    (tmp / "bench" / "reference.onnx").write_bytes(reference_model_bytes())
    shutil.copyfile(RUNNER, tmp / "runner.py")  # the torch-free runner travels with the bundle
    for name, src in spec.extra_files.items():
        shutil.copyfile(src, tmp / name)
    (tmp / "README.md").write_text(_readme(spec, io, fixes, ready), encoding="utf-8")
    files = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    return Manifest.model_validate({
        "manifest_version": MANIFEST_VERSION,
        "producer": f"compress {__version__}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "task": spec.task,
        "files": files,
        "io": io,
        "model": {"onnx": "model.onnx", "mobile_onnx": mobile.name, "ort": "model.ort",
                  "ops_config": OPS_CONFIG, "ort_platform": spec.platform,
                  "ort_optimization_style": spec.ort_style, "ort_optimization_level": spec.ort_level,
                  "ort_graph_ops": ort_graph_ops(ort_path)},
        "runtime": _runtime_section(spec),
        "eval": {"file": "eval.npz", "samples": len(next(iter(spec.eval_inputs.values()))),
                 "labels": spec.labels is not None},
        "check": check,
        "preprocess": {"file": "preprocess.json", "kind": spec.preprocess.kind,
                       "version": PREPROCESS_VERSION},
        "mobile": {"fixes": fixes, "readiness": ready,
                   "before_fixes": {ep: {k: r[k] for k in ("supported_nodes", "nodes", "partitions")}
                                    for ep, r in before.items() if isinstance(r, dict)}},
        "bench": {"reference": "bench/reference.onnx", "reference_version": REFERENCE_VERSION},
        "quality": spec.quality,
        "latency": spec.latency,
        "config_sha256": spec.config_sha256,
        "libraries": versions(),
        "target": None,
    }).dump()


def write_bundle(model_path: Path, out_dir: Path, spec: BundleSpec) -> BundleResult:
    """Write the bundle for ``model_path`` to ``out_dir`` (atomically; see the module doc)."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such model file (expected an .onnx model)")
    if _uses_external_data(model_path):
        raise InputError(f"{model_path}: keeps its weights in external data files; a bundle "
                         "ships one self-contained model (export with external_data=False)")
    with staged_folder(out_dir) as tmp:
        manifest = _build(model_path, tmp, spec)
        write_json(tmp / "manifest.json", manifest)
    return BundleResult(out_dir, manifest)


def _uses_external_data(model_path: Path) -> bool:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise InputError(f"{model_path}: not an ONNX model ({str(e).splitlines()[0]})") from e
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that replaces it when the block succeeds and is
    removed when it fails, so a failed write never leaves half a folder or loses the old one."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` onto ``out_dir``; an old bundle is moved aside first, removed after."""
    os.chmod(tmp, 0o777 & ~umask())
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _training_data(table: str | None) -> str:
    """The README's section on the text the model learned from (empty without one)."""
    if not table:
        return ""
    return f"Training data (sentences used per source, and their licences):\n\n{table}\n\n"


def _readme(spec: BundleSpec, io: dict, fixes: list[str], ready: dict) -> str:
    from compress.bundle.notes import app_notes

    eps = "\n".join(f"- {ep}: {r['supported_nodes']}/{r['nodes']} nodes in {r['partitions']} "
                    f"partition(s); unsupported: {', '.join(r['unsupported_ops']) or 'none'}"
                    for ep, r in ready.items() if isinstance(r, dict))
    q = spec.quality
    measured = (f"{q.metric} {q.value:.4f} on split {q.split}" if q.value is not None
                else "not measured in the run (no benchmark stage)")
    notes = app_notes(io, _preprocess_json(spec, io), _runtime_section(spec))
    return f"""# Deploy bundle ({spec.task}, {spec.precision})

Files (sha256 and size of each in `manifest.json`):
- `model.onnx`: the final model; `model.ort`: ORT format for ONNX Runtime Mobile
  ({spec.platform}, optimization style {spec.ort_style}), built from `{'model.mobile.onnx' if fixes else 'model.onnx'}`
- `{OPS_CONFIG}`: operators and types for a reduced ONNX Runtime build
- `preprocess.json`: input names, shapes, dtypes and the exact preprocessing
- `eval.npz`: sample inputs and expected outputs (`expected__<output>`); `manifest.json`'s
  `check` holds the tolerance a device must meet on them

{notes}
Quality in the run: {measured}.

Mobile readiness (ORT usability checker; one partition covering all nodes is the goal):
{eps}
Fixes applied to the mobile variant: {'; '.join(fixes) or 'none'}.

{_training_data(spec.training_data)}Verify and evaluate without torch:

    python -m venv .venv && .venv/bin/pip install onnxruntime numpy pillow
    .venv/bin/python runner.py BUNDLE_DIR --eval
"""
