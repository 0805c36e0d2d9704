"""Benchmark every ONNX model of the run (the teacher's included) on ONNX Runtime, in one run.

MACs are counted on the ONNX graph that ships (``compress.bench.macs``), not by a PyTorch op
counter that misses subclassed and functional convolutions.

Latency is measured interleaved so drift hits all models alike, with the pipeline's ``target:``
settings; quality is measured by the task in ORT on the test split, on the very files that ship
(``compress.bench.measure``). Every raw latency sample is kept (``latency/NAME.npy``) for the
report's distributions.
"""

from __future__ import annotations

from pathlib import Path

from compress.artifacts import ModelArtifact, StageResult
from compress.bench.latency import pick_clock
from compress.bench.measure import benchmark_models, quality_count
from compress.common.console import current
from compress.config.stages import BenchmarkConfig, ExportConfig
from compress.errors import StageError
from compress.stage_reports import BenchmarkReport
from compress.stages.base import Stage, StageContext
from compress.tasks.llm_label_file import is_llm


def _with_torch_exports(models: list[ModelArtifact], ctx: StageContext):
    """The run's ONNX models plus an export of each torch model published for measurement (the
    distilled student before pruning), exported as the run's export stage exported the student:
    ``(models in publishing order, {name: file in the stage folder})``."""
    from compress.export.checked import export_checked

    torch_models = [m for m in ctx.published.values() if m.format == "torch" and m.module is not None]
    if not torch_models:
        return models, {}
    # exported as the run's export stage exported the student: the same kind of graph
    cfg = ctx.export or ExportConfig(dynamic_batch=ctx.task.sequence_axis is not None)
    exported, out = {}, []
    for m in ctx.published.values():
        if m.format == "torch" and m.module is not None:
            rel = Path("models") / f"{m.name}.onnx"
            (ctx.stage_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            current().info(f"[{ctx.stage_name}] exporting {m.name} to measure it in ORT")
            export_checked(m.module, ctx.task, ctx.example(cfg.batch_size), ctx.stage_dir / rel, cfg,
                           ctx.data.test)
            out.append(ModelArtifact.from_onnx(m.name, ctx.stage_dir / rel, m.precision, **m.meta))
            exported[m.name] = str(rel)
        elif m.format == "onnx":
            out.append(m)
    return out, exported


class BenchmarkStage(Stage):
    kind = "benchmark"
    uses_target = True

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: BenchmarkConfig = self.cfg
        if ctx.task.generates:
            return _decoders(cfg, model, ctx)
        models = [m for m in ctx.published.values() if m.format == "onnx" and not is_llm(m)]
        if not models:
            raise StageError("no ONNX model to benchmark: put an export stage before benchmark")
        models, exported = _with_torch_exports(models, ctx)
        median = ctx.data.info.preprocessing.get("median_tokens")
        # the count that benchmark.max_samples leaves, as the quality takes it (it said the split's)
        counted, total = quality_count(ctx.data.test, cfg.max_samples), len(ctx.data.test)
        current().info(f"[{ctx.stage_name}] timing {len(models)} models interleaved "
                       f"(at least {ctx.target.runs} runs each, "
                       f"{pick_clock('auto', ctx.target.threads)} clock), then their quality on "
                       f"{counted}{f' of {total}' if counted < total else ''} test samples")
        found = benchmark_models(models, ctx.task, ctx.data.test, cfg, ctx.target, ctx.stage_dir,
                                 ctx.run_dir, median, ctx.data.extra, ctx.data.probe)
        llm = [m for m in ctx.published.values() if is_llm(m)]
        if llm:  # an llm teacher: timed on its prompt beside the students on their text
            from compress.bench.llm import measure_llm

            found = measure_llm(llm, models, found, ctx.task, ctx.data.test, cfg.max_samples,
                                ctx.target, ctx.stage_dir, ctx.run_dir, median)
        for m in found:  # relative to the run dir, where the stage folder lands on success
            m.samples = str(Path(ctx.stage_name) / m.samples)
            if m.name in exported:
                m.path = str(Path(ctx.stage_name) / exported[m.name])
        files = [str(Path("latency") / f"{m.name}.npy") for m in found] + list(exported.values())
        report = BenchmarkReport(models=[m.name for m in found], split="test",
                                 clock=found[0].clock if found else None)
        return StageResult(model, report,
                           files=files, measurements=found)


def _decoders(cfg: BenchmarkConfig, model: ModelArtifact, ctx: StageContext) -> StageResult:
    """Every causal-LM decoder of the run (the teacher's fp32 first: the reference, then its
    own quantized peers, then the student's), on the test windows (``compress.bench.decoder``)."""
    from compress.bench.decoder import DecoderBench, benchmark_decoders

    models = sorted((m for m in ctx.published.values() if m.format == "onnx"),
                    key=lambda m: (m.name != "teacher", not m.name.startswith("teacher")))
    windows = ctx.task.arrays(ctx.data.test, cfg.max_samples)[1]
    current().info(f"[{ctx.stage_name}] measuring {len(models)} decoders on {len(windows)} test "
                   f"windows and {cfg.prompts} prompts, timed at contexts "
                   f"{', '.join(map(str, cfg.contexts))} ({cfg.rounds} rounds, interleaved)")
    bench = DecoderBench(cfg.prompts, cfg.new_tokens, list(cfg.contexts), cfg.rounds,
                         cfg.max_samples)
    found = benchmark_decoders(models, windows, bench, ctx.target, ctx.stage_dir, ctx.run_dir)
    files = [str(Path("latency") / f"{m.name}.npy") for m in found]
    for m in found:
        m.samples = str(Path(ctx.stage_name) / m.samples)
    report = BenchmarkReport(models=[m.name for m in found], split="test", clock=found[0].clock)
    return StageResult(model, report, files=files, measurements=found)
