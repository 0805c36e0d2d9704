"""Judging int8 candidates against their fp32 model, as the quantize stage does: ORT accuracy
for classifiers, top-1 agreement, output cosine and p50 latency interleaved with fp32, all on the
validation split (the fallback chooses on it)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.config.stages import QuantizeConfig, TargetConfig
from compress.errors import InputError
from compress.quant.ptq import Int8Preset, choose_preset, mean_cosine
from compress.stage_reports import QuantTrial

if TYPE_CHECKING:
    from compress.data.sources import DataBundle
    from compress.tasks.base import Task


@dataclass
class Job:
    """One quantization: what to measure with and where the files go."""

    cfg: QuantizeConfig
    task: Task
    data: DataBundle
    target: TargetConfig
    out: Path  # trial files and model.int8.onnx
    seed: int = 0
    where: str = "quantize"  # YAML path, for messages

    @cached_property
    def scheme(self) -> tuple[str, str, Int8Preset]:
        """The int8 preset for the target CPU: (name, why it was picked, preset)."""
        choice = choose_preset(self.target.isa)
        return choice.name, choice.reason, choice.preset


@dataclass
class Trial:
    path: Path
    excluded: list[str]
    accuracy: float | None
    agreement: float
    cosine: float
    fp32_p50: float
    p50: float

    @property
    def speedup(self) -> float:
        return self.fp32_p50 / self.p50

    def record(self) -> QuantTrial:
        return QuantTrial(float_layers=self.excluded, accuracy=self.accuracy, top1_agreement=self.agreement,
                          cosine=round(self.cosine, 5), p50_ms=round(self.p50, 5),
                          fp32_p50_ms=round(self.fp32_p50, 5), speedup=round(self.speedup, 3))


class Judge:
    """Measures candidates against the fp32 model on the validation split (the fallback chooses
    on it): ORT accuracy for classifiers, top-1 agreement, output cosine, and p50 latency
    interleaved with fp32."""

    def __init__(self, fp32: Path, job: Job):
        from compress.common.ort import make_session, timing_feed
        from compress.tasks.base import ort_arrays

        self.fp32, self.job, self.cfg, self.level = fp32, job, job.cfg, job.target.opt_level
        sess = make_session(fp32, 1, "basic")
        self.feeds, self.y = ort_arrays(job.task, job.data.val, sess)
        wants = sorted(i.name for i in sess.get_inputs())
        if wants != sorted(self.feeds):
            # never judge (or calibrate) on made-up inputs: a number measured on noise misleads
            raise InputError(
                f"quantize: {fp32.name} takes inputs {', '.join(wants)} but the {job.task.name} "
                f"task's data gives {', '.join(sorted(self.feeds))}; map them with teacher.inputs "
                f"(e.g. teacher: {{onnx: FILE, inputs: {{{sorted(self.feeds)[0]}: {wants[0]}}}}})")
        self.labeled = job.task.uses.labels and bool((self.y >= 0).any())
        self.ref = self._outputs(fp32)
        self.fp32_accuracy = self._accuracy(self.ref)
        self.timing_feed = timing_feed(sess, self.feeds)

    def _outputs(self, path: Path) -> np.ndarray:
        from compress.common.ort import make_session, run_batched

        return run_batched(make_session(path, 1, self.level), self.feeds)[0]

    def _accuracy(self, out: np.ndarray) -> float | None:
        return self.job.task.quality(out, self.y)["accuracy"] if self.labeled else None

    def trial(self, path: Path, excluded: list[str]) -> Trial:
        from compress.common.console import current

        # a brought ONNX teacher's trials take minutes: one line each, as the other stages print
        current().info(f"[quantize] judging {path.name} ({len(excluded)} layer(s) kept in float) "
                       f"on {len(self.y)} validation samples")
        out = self._outputs(path)
        agree = float((out.argmax(-1) == self.ref.argmax(-1)).mean())
        fp32_p50, p50 = self.time(path)
        return Trial(path, list(excluded), self._accuracy(out), agree, mean_cosine(self.ref, out),
                     fp32_p50, p50)

    def time(self, path: Path) -> tuple[float, float]:
        """p50 (ms) of the fp32 model and of ``path``, timed interleaved in one run."""
        from compress.bench.latency import measure_interleaved

        b = self.job.target
        fp32_m, m = measure_interleaved([self.fp32, path], [self.timing_feed] * 2, b.threads, self.level,
                                        b.runs, b.warmup)
        return fp32_m.stats.p50, m.stats.p50

    def drop(self, t: Trial) -> float:
        """ORT top-1 accuracy lost vs fp32, as a fraction (0 for models without labels)."""
        return self.fp32_accuracy - t.accuracy if self.labeled else 0.0

    def accurate(self, t: Trial) -> bool:
        if self.labeled:
            return self.drop(t) <= self.cfg.max_accuracy_drop + 1e-9
        return t.cosine >= self.cfg.min_cosine

    def shortfall(self, t: Trial) -> str:
        """The measured quality of ``t`` against the limit it missed."""
        if self.labeled:
            return f"best drop {self.drop(t) * 100:.2f} points, limit {self.cfg.max_accuracy_drop * 100:g} points"
        return f"best mean cosine {t.cosine:.4f}, min_cosine {self.cfg.min_cosine:g}"

    def better(self, a: Trial, b: Trial | None) -> bool:
        """Best so far: the most accurate, then the fastest."""
        if b is None:
            return True
        qa, qb = (a.accuracy, b.accuracy) if self.labeled else (a.cosine, b.cosine)
        return (qa, -a.p50) > (qb, -b.p50)
