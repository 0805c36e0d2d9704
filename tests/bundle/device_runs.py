"""Run directories with real bundles for the device checks (arm64 under qemu, the browser), built
once per test session by the real pipelines with fewer epochs and samples:

- the demo (pipelines/mobile.yaml, ``target.isa: arm64`` so the int8 model is the arm64 preset's
  and is kept whatever this CPU measures) and its fp32 twin (the same run without the quantize
  stage: distill, prune and export resume from the int8 run);
- the MiniLM student (pipelines/minilm-edge.yaml: 3 of the teacher's 6 layers, dynamic int8 with
  the arm64 preset) on 160 sentences, one epoch, and its fp32 twin.

``COMPRESS_DEVICE_RUNS=DIR`` keeps them in DIR across sessions (resume makes a second session
re-use every stage whose record still matches).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml
from _util import ROOT
from click.testing import CliRunner

DEMO_SET = ["target.isa=arm64", "teacher.train.epochs=2", "stages.0.distill.epochs=5",
            "stages.1.prune.epochs=1", "target.runs=50"]
MINILM_SET = ["target.isa=arm64", "target.runs=10", "target.warmup=2", "data.max_length=64",
              "teacher.optimum_baseline=false", "stages.0.distill.epochs=1",
              "stages.3.benchmark.seq_lens=[64]", "stages.4.package.eval_samples=8"]
_BUILT: dict[str, dict[str, Path]] = {}


def _pipeline(config: Path, out: Path, sets: list[str]) -> None:
    from compress.cli import cli

    args = ["pipeline", str(config), "--out", str(out), "--no-progress", "-q"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(cli, args)
    if res.exit_code != 0:
        raise RuntimeError(f"compress {' '.join(args)} exited {res.exit_code}:\n{res.output}")


def _without_quantize(config: Path, folder: Path) -> Path:
    raw = yaml.safe_load(config.read_text())
    raw["stages"] = [s for s in raw["stages"] if "quantize" not in s]
    path = folder / f"{config.stem}-fp32.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _pair(root: Path, config: Path, sets: list[str]) -> dict[str, Path]:
    """``{"int8": run dir, "fp32": run dir}``; the fp32 run starts as a copy of the int8 one."""
    int8, fp32 = root / f"{config.stem}-int8", root / f"{config.stem}-fp32"
    _pipeline(config, int8, sets)
    if not fp32.exists():
        shutil.copytree(int8, fp32, ignore=shutil.ignore_patterns("bundle", "deploy"))
    q = next(i for i, st in enumerate(yaml.safe_load(config.read_text())["stages"])
             if "quantize" in st)
    fp32_sets = [re.sub(r"^stages\.(\d+)\.", lambda m: f"stages.{int(m[1]) - (int(m[1]) > q)}.", s)
                 for s in sets]
    _pipeline(_without_quantize(config, root), fp32, fp32_sets)
    return {"int8": int8, "fp32": fp32}


def _root(tmp_path_factory) -> Path:
    env = os.environ.get("COMPRESS_DEVICE_RUNS")
    root = Path(env) if env else tmp_path_factory.getbasetemp() / "device-runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def demo_runs(tmp_path_factory) -> dict[str, Path]:
    if "demo" not in _BUILT:
        _BUILT["demo"] = _pair(_root(tmp_path_factory), ROOT / "pipelines" / "mobile.yaml", DEMO_SET)
    return _BUILT["demo"]


def minilm_runs(tmp_path_factory) -> dict[str, Path]:
    if "minilm" not in _BUILT:
        from compress.data.text import pydoc_sentences

        root = _root(tmp_path_factory)
        corpus = root / "sentences.txt"
        if not corpus.exists():
            corpus.write_text("\n".join(pydoc_sentences()[:160]) + "\n")
        # a short run on 160 pydoc sentences instead of the YAML's corpus, holdout and probe
        _BUILT["minilm"] = _pair(root, ROOT / "pipelines" / "minilm-edge.yaml",
                                 [*MINILM_SET, f"data.path={corpus}", "data.corpus=null",
                                  "data.holdout=[]", "data.probe=null", "data.max_sentences=null"])
    return _BUILT["minilm"]
