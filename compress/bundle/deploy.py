"""Target profiles (``compress/bundle/profiles/<target>.yaml``) and ``compress deploy``'s work: a bundle
re-cut for one device class, with its execution providers in order and CPU as the fallback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compress.bundle.manifest import FileEntry, Manifest, Runtime, Target, read_manifest
from compress.common.files import write_json
from compress.errors import InputError

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"  # package data: ships in the wheel
PROVIDERS = {"XNNPACK": "XnnpackExecutionProvider", "NNAPI": "NnapiExecutionProvider",
             "CoreML": "CoreMLExecutionProvider", "CPU": "CPUExecutionProvider"}


class TargetProfile(BaseModel):
    """One device class: how its model file is cut and how its session is set up."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(description="What runs there, in a line.")
    platform: Literal["arm", "amd64"] = Field(description="ORT-format target platform.")
    model_format: Literal["ort", "onnx"] = Field(description="The file the device loads.")
    ort_optimization_style: Literal["runtime", "fixed"] = Field(
        "runtime", description="runtime keeps portable ops (NNAPI/CoreML can take them); fixed "
                               "bakes the level in (CPU-only devices).")
    ort_optimization_level: Literal["basic", "extended", "all"] = Field(
        "all", description="Optimization level of the ORT-format conversion.")
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="Session graph optimization level on the device.")
    threads: int = Field(ge=1, le=256, description="ORT intra-op threads (required: the app "
                                                    "sets it, and latency was measured at it).")
    providers: list[Literal["XNNPACK", "NNAPI", "CoreML", "CPU"]] = Field(
        min_length=1, description="Execution providers in order of preference; CPU last.")


def target_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_target(name: str) -> TargetProfile:
    """Read and check ``compress/bundle/profiles/<name>.yaml``; InputError (exit 2) names what is wrong."""
    import yaml

    names = target_names()
    if name not in names:
        raise InputError(f"--target {name!r}: unknown target (expected one of: {', '.join(names)})")
    path = PROFILES_DIR / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return TargetProfile.model_validate(raw)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        raise InputError(f"{path}: {where}: {err['msg']}") from None


def verify_bundle(bundle: Path) -> Manifest:
    """The bundle's typed manifest, after checking every listed file's sha256 (InputError if
    not, or if a key is missing)."""
    from compress.common.files import sha256_file

    path = bundle / "manifest.json"
    manifest = read_manifest(path)
    root = bundle.resolve()
    for name, entry in manifest.files.items():
        f = bundle / name
        if Path(name).is_absolute() or ".." in Path(name).parts \
                or not f.resolve().is_relative_to(root):
            raise InputError(f"{path}: file path {name!r} leaves the bundle")
        if not f.is_file() or sha256_file(f) != entry.sha256:
            raise InputError(f"{f}: missing or sha256 mismatch (the bundle was changed)")
    return manifest


def provider_plan(profile: TargetProfile) -> tuple[list[str], list[str]]:
    """``(ORT provider names in order, notices for those this onnxruntime build lacks)``."""
    import onnxruntime as ort

    wanted = [PROVIDERS[p] for p in profile.providers]
    if PROVIDERS["CPU"] not in wanted:
        wanted.append(PROVIDERS["CPU"])
    have = set(ort.get_available_providers())
    notices = [f"{short} ({PROVIDERS[short]}) is not in this onnxruntime {ort.__version__} build "
               f"(available: {', '.join(sorted(have))}); here it falls back to CPU, on the device "
               "it needs an onnxruntime build with it"
               for short in profile.providers if PROVIDERS[short] not in have]
    return wanted, notices


def deploy_target(run_dir: Path, target: str) -> tuple[Path, Manifest]:
    """Write ``RUN_DIR/deploy/<target>/`` from ``RUN_DIR/bundle`` and the target profile, with
    ``APP.md``: the app notes generated from this folder's own manifest and preprocess.json.

    The folder is itself a bundle (the runner takes it). Returns ``(folder, its manifest)``.
    """
    from compress.bundle.writer import staged_folder

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    if target == "web":  # the browser: its own profile and folder (compress/bundle/web.py)
        from compress.bundle.web import deploy_web

        return deploy_web(run_dir, run_dir / "bundle", verify_bundle(run_dir / "bundle"))
    profile = load_target(target)
    bundle = run_dir / "bundle"
    manifest = verify_bundle(bundle)
    out = run_dir / "deploy" / target
    with staged_folder(out) as tmp:
        for name in manifest.files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / name, tmp / name)
        manifest = _recut(tmp, manifest, profile, target)
        write_json(tmp / "manifest.json", manifest.dump())
    return out, manifest


def _recut(tmp: Path, manifest: Manifest, profile: TargetProfile, target: str) -> Manifest:
    """The target's model file, runtime section, APP.md and file table in ``tmp``."""
    from compress.bundle.notes import app_notes
    from compress.bundle.ort_format import convert_to_ort, ort_graph_ops
    from compress.common.files import sha256_file

    model = manifest.model
    if profile.model_format == "ort":
        ort_path, _ = convert_to_ort(tmp / model.mobile_onnx, tmp, profile.platform,
                                     profile.ort_optimization_style,
                                     profile.ort_optimization_level)
        model = model.model_copy(update={
            "ort_graph_ops": ort_graph_ops(ort_path), "ort_platform": profile.platform,
            "ort_optimization_style": profile.ort_optimization_style,
            "ort_optimization_level": profile.ort_optimization_level})
    providers, notices = provider_plan(profile)
    runtime = Runtime(model=model.ort if profile.model_format == "ort" else model.onnx,
                      providers=providers, threads=profile.threads,
                      opt_level=profile.graph_optimization_level)
    pre = json.loads((tmp / manifest.preprocess.file).read_text(encoding="utf-8"))
    io = manifest.io.model_dump()
    (tmp / "APP.md").write_text(f"# {profile.description}\n\n"
                                + app_notes(io, pre, runtime.model_dump(), target),
                                encoding="utf-8")
    files = {p.relative_to(tmp).as_posix(): FileEntry(sha256=sha256_file(p),
                                                      bytes=p.stat().st_size)
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    return manifest.model_copy(update={
        "model": model, "runtime": runtime, "files": files,
        "target": Target(name=target, profile=profile.model_dump(), notices=notices)})
