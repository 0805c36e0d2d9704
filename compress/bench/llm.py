"""An llm teacher measured beside its student, in one run, on the files that ship.

Each model is timed on its own input, interleaved (``measure_interleaved``), 1 thread as the
target says: the LLM's prompt scorer (fp32, and its own int8) on the test prompt of median
length, the students on a test text at the median token count. Quality on the test split: the
LLM's gold accuracy from its ONNX answers, calibrated as configured (each copy divided by its own
prior on the content-free prompts) and raw; each student's top-1 agreement with the LLM's
labels; the per-query cost ratio, LLM p50 over student p50 from the same interleaved timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from compress.artifacts import ModelArtifact, ModelMeasurement
from compress.common.files import atomic_write
from compress.records.measurement import CostRatio
from compress.tasks.base import Task
from compress.tasks.llm_label_file import LabelFile, labels_path, read_labels


def _softmax_log(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def llm_answers(path: Path, lf: LabelFile, prompts: list[list[int]], opt_level: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(raw top-1, calibrated top-1)`` of one ONNX copy of the LLM on ``prompts``, in the
    student's label order; the calibrated answers divide by this copy's own content-free prior
    (equal to raw when calibration is off)."""
    from compress.common.ort import make_session
    from compress.export.llm_scorer import ort_scores

    sess = make_session(path, 1, opt_level)
    cols = _columns(lf)
    raw = ort_scores(sess, prompts)[:, cols]
    if not lf.calibrate or not lf.content_free_prompts:
        return raw.argmax(-1), raw.argmax(-1)
    prior = np.exp(_softmax_log(ort_scores(sess, lf.content_free_prompts)[:, cols])).mean(0)
    return raw.argmax(-1), (_softmax_log(raw) - np.log(prior)).argmax(-1)


def _columns(lf: LabelFile) -> list[int]:
    return lf.columns if lf.columns is not None else list(range(len(lf.labels)))


def _feeds(task: Task, models: list[ModelArtifact], prompt: list[int], ds: Dataset, length: int | None):
    from compress.common.ort import make_session, timing_feed
    from compress.tasks.base import ort_arrays

    ids = np.asarray([prompt], dtype=np.int64)
    llm_feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    out = []
    for m in models:
        sess = make_session(m.path, 1, "basic")
        out.append(timing_feed(sess, ort_arrays(task, Subset(ds, [0]), sess, seq_len=length)[0]))
    return llm_feed, out


def _stats(r) -> dict[str, float]:
    return {k: round(getattr(r.stats, k), 5) for k in ("p50", "p90", "p99", "mean", "std")}


def _student_top1(task: Task, path: Path, ds: Dataset, limit: int | None, opt_level: str) -> np.ndarray:
    from compress.common.ort import make_session, run_batched
    from compress.tasks.base import ort_arrays

    sess = make_session(path, 1, opt_level)
    feeds, _ = ort_arrays(task, ds, sess, limit)
    return run_batched(sess, feeds)[0].argmax(-1)


def measure_llm(llm: list[ModelArtifact], students: list[ModelArtifact],
                found: list[ModelMeasurement], task: Task, ds: Dataset, limit: int | None,
                target, out_dir: Path, run_dir: Path, median: int | None) -> list[ModelMeasurement]:
    """The LLM's rows (fp32 first), followed by ``found`` (the students' rows, measured by
    ``benchmark_models``) with their agreement with the LLM and their cost ratios filled in
    (``cost_ratio_vs_llm`` from this interleaved timing; ``speedup_vs_teacher`` from the rows'
    own p50s, as the models table shows them)."""
    from compress.bench.latency import measure_interleaved

    lf = read_labels(labels_path(llm[0]))
    n = len(ds) if limit is None else min(limit, len(ds))
    prompts = lf.test_prompts[:n]
    order = sorted(range(len(lf.test_prompts)), key=lambda i: len(lf.test_prompts[i]))
    prompt = lf.test_prompts[order[len(order) // 2]]  # the test prompt of median length
    llm_feed, feeds = _feeds(task, students, prompt, ds, median)
    paths = [m.path for m in llm] + [m.path for m in students]
    runs = measure_interleaved(paths, [llm_feed] * len(llm) + feeds, target.threads,
                               target.opt_level, target.runs, target.warmup)
    gold = np.array([int(ds[i][1]) for i in range(n)])
    wanted = lf.logprobs[[lf.rows[s] for s in _test_shas(ds, n)]].argmax(-1)
    rows = []
    for m, r in zip(llm, runs, strict=False):
        raw, cal = llm_answers(m.path, lf, prompts, target.opt_level)
        headline = cal if lf.calibrate else raw
        q = {"accuracy": float((headline == gold).mean()), "accuracy_raw": float((raw == gold).mean()),
             "agreement_fp32_labels": float((headline == wanted).mean())}
        if lf.calibrate:
            q["accuracy_calibrated"] = float((cal == gold).mean())
        rows.append(_row(m, r, q, len(prompt), n, task, target, out_dir, run_dir))
    base, base8 = runs[0].stats.p50, runs[1].stats.p50 if len(llm) > 1 else None
    for m, r in zip(students, runs[len(llm):], strict=True):
        row = next(f for f in found if f.name == m.name)
        top1 = _student_top1(task, m.path, ds, limit, target.opt_level)
        row.quality["llm_agreement"] = float((top1 == wanted).mean())
        row.llm_agreement = row.quality["llm_agreement"]
        row.speedup_vs_teacher = round(base / row.p50, 3)  # the models table's own p50s
        row.cost_ratio_vs_llm = CostRatio(
            teacher=round(base / r.stats.p50, 3), student_p50_ms=round(r.stats.p50, 5),
            **({llm[1].name: round(base8 / r.stats.p50, 3)} if base8 else {}))
    for row in rows:
        row.speedup_vs_teacher = round(base / row.p50, 3)
    return rows + found


def _test_shas(ds: Dataset, n: int) -> list[str]:
    from compress.tasks.llm_labels import _sha

    return [_sha(t) for t in list(ds.sentences)[:n]]


def _row(m: ModelArtifact, r, q: dict[str, float], length: int, n: int, task: Task, target,
         out_dir: Path, run_dir: Path) -> ModelMeasurement:
    samples = out_dir / "latency" / f"{m.name}.npy"

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, np.asarray(r.samples_ms), allow_pickle=False)

    atomic_write(samples, save)
    return ModelMeasurement(
        name=m.name, stage=m.meta.get("stage", "teacher"),
        path=str(Path(m.path).resolve().relative_to(run_dir.resolve())), sha256=m.sha256,
        bytes=r.bytes, params=m.meta.get("params"), macs=None, precision=m.precision,
        accuracy=q["accuracy"], split="test", quality=q, task=task.name, metric=task.metric,
        higher_is_better=True, latency_ms=_stats(r), threads=target.threads,
        opt_level=target.opt_level, runs=r.stats.n, quality_samples=n,
        samples=str(samples.relative_to(out_dir)), throughput_per_s=round(r.stats.throughput, 1),
        session_create_ms=round(r.session_ms, 2), latency_by_length={f"seq{length}": _stats(r)},
        clock=r.clock, llm_prompt_tokens=length)
