"""The chosen trial of a `compress search` run against a hand-written pipeline and the teacher, on
the test split, in one interleaved benchmark (1 thread, as the run's target: says).

    python benchmarks/search_compare.py RUN_DIR [--handwritten PIPELINE.yaml] [--json OUT]

RUN_DIR is a finished search run (RUN_DIR/search/, RUN_DIR/report.json). The hand-written pipeline
(default: pipelines/mobile.yaml as of commit 036f34b, read with `git show`) is run in
RUN_DIR/compare/handwritten/ through the search's stage store, so it shares the search's teacher
(same teacher config, data and seed: the same resume key); it must use the search's teacher and
data. Then teacher, hand-written final model and chosen final model are measured side by side:
p50 and speedups are ratios from that one run; accuracies are on the test split, which chose
nothing in either pipeline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _handwritten_yaml(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    text = subprocess.run(["git", "-C", str(ROOT), "show", "036f34b:pipelines/mobile.yaml"],
                          check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="compress-hand-")) / "mobile-036f34b.yaml"
    path.write_text(text)
    return path


def _run_handwritten(run_dir: Path, yaml_path: Path):
    from compress.config.pipeline import load_config
    from compress.engine.step_cache import search_store
    from compress.search.trial import pipeline_raw, run_candidate, validated

    _, raw = load_config(yaml_path)
    raw = pipeline_raw(raw, [])  # without benchmark and package: measured below, beside the others
    cfg = validated(raw, str(yaml_path))
    out = run_candidate(cfg, raw, run_dir / "compare" / "handwritten",
                        search_store(run_dir / "search" / "store"), "cpu")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--handwritten", help="a pipeline YAML (default: mobile.yaml at 036f34b)")
    p.add_argument("--json", type=Path, help="also write the table as JSON")
    args = p.parse_args(argv)

    from compress.artifacts import ModelArtifact
    from compress.bench.measure import benchmark_models
    from compress.config.stages import BenchmarkConfig

    run_dir = args.run_dir.resolve()
    report = json.loads((run_dir / "report.json").read_text())
    chosen = next(m for m in report["models"] if m["name"] == report["final"])
    hand = _run_handwritten(run_dir, _handwritten_yaml(args.handwritten))
    eng = hand.engine
    if hand.teacher_onnx.sha256 != next(m["sha256"] for m in report["models"] if m["name"] == "teacher"):
        print("the hand-written pipeline's teacher differs from the search's", file=sys.stderr)
        return 2
    models = [hand.teacher_onnx, ModelArtifact(f"handwritten-{hand.final.name}", "onnx",
                                               path=hand.final.path, sha256=hand.final.sha256,
                                               precision=hand.final.precision, meta=hand.final.meta),
              ModelArtifact.from_onnx(f"chosen-{chosen['name']}", run_dir / chosen["path"],
                                      chosen["precision"], params=chosen.get("params"))]
    found = benchmark_models(models, eng.task, eng.data.test, BenchmarkConfig(), eng.cfg.target,
                             run_dir / "compare", run_dir)
    rows = [{"model": m.name, "params": m.params, "bytes": m.bytes, "precision": m.precision,
             "test_accuracy": round(m.accuracy, 4), "p50_ms": round(m.p50, 5),
             "speedup_vs_teacher": m.speedup_vs_teacher, "clock": getattr(m, "clock", None)}
            for m in found]
    print("| model | params | bytes | precision | test accuracy | p50 ms | speedup vs teacher |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params']} | {r['bytes']} | {r['precision']} | "
              f"{r['test_accuracy'] * 100:.2f}% | {r['p50_ms']:.4f} | {r['speedup_vs_teacher']}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
