"""The package installed from its wheel (not editable) carries the runner and the deploy
profiles: a tiny pipeline with a ``package`` stage, run from a folder outside the repository,
writes runner.py into its bundle, and ``compress deploy`` finds its targets.

The scratch environment is a plain venv whose own site-packages holds the wheel; a ``.pth`` file
adds this venv's site-packages after it for the dependencies (torch, onnxruntime, ...), without
the editable install's finder (a ``.pth`` line adds a path; it does not run that path's own
``.pth`` files), so ``import compress`` can only find the wheel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the working tree (no build/ left in the repository)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "compress", src / "compress",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules"))
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("compress-*.whl")
    return whl


def test_wheel_holds_the_runner_and_the_profiles(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "compress/bundle/runner.py" in names and "compress/py.typed" in names
    profiles = {n.rsplit("/", 1)[1] for n in names if n.startswith("compress/bundle/profiles/")}
    assert {"android.yaml", "ios.yaml", "edge-x86.yaml", "edge-arm64.yaml"} <= profiles
    assert not any(n.startswith(("tests/", "deploy/")) for n in names)
    runner = zipfile.ZipFile(wheel).read("compress/bundle/runner.py")
    assert runner == (ROOT / "compress" / "bundle" / "runner.py").read_bytes()


@pytest.fixture(scope="module")
def scratch(wheel, tmp_path_factory) -> Path:
    """A venv with the wheel installed (no deps, no index) and this venv's packages behind it."""
    venv = tmp_path_factory.mktemp("scratch") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                        "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return venv


def _tiny_onnx(path: Path) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 8 * 8, 10)).eval()
    torch.onnx.export(m, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["input"],
                      output_names=["logits"], dynamo=False, opset_version=17)
    return path


@pytest.mark.slow
def test_installed_wheel_packages_a_bundle_with_its_runner(scratch, tmp_path):
    import yaml

    py, cli = scratch / "bin" / "python", scratch / "bin" / "compress"
    where = subprocess.check_output([str(py), "-c", "import compress; print(compress.__file__)"],
                                    cwd=tmp_path, text=True).strip()
    assert Path(where).is_relative_to(scratch) and not Path(where).is_relative_to(ROOT)
    cfg = {"version": 1, "name": "wheel", "seed": 0, "device": "cpu",
           "target": {"runs": 10, "warmup": 2}, "data": {"source": "digits", "image_size": 8},
           "teacher": {"onnx": str(_tiny_onnx(tmp_path / "tiny.onnx"))},
           "stages": [{"package": {}}]}
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([str(cli), "pipeline", "pipe.yaml", "--out", "run", "--no-progress"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    bundle = tmp_path / "run" / "bundle"
    installed = Path(where).parent / "bundle" / "runner.py"
    assert (bundle / "runner.py").read_bytes() == installed.read_bytes()
    assert "runner.py" in json.loads((bundle / "manifest.json").read_text())["files"]
    r = subprocess.run([str(cli), "deploy", "run", "--target", "edge-arm64"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "run" / "deploy" / "edge-arm64" / "runner.py").is_file()
    r = subprocess.run([str(py), "-m", "compress.bundle.runner", "run/deploy/edge-arm64",
                        "--eval"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check     logits.argmax_agreement 1 >= 1 (fp32): ok" in r.stdout
