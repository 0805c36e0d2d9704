"""ONNX Runtime in one place: sessions (threads, optimization level), the CPU's identity and
flags, batched runs over named arrays, and ORT's MatMulNBits quantizer imported quietly. Every
stage and command that touches ORT goes through here.
"""

from __future__ import annotations

import importlib
import logging
import platform
from pathlib import Path

import numpy as np

OPT_LEVELS = ("disable", "basic", "extended", "all")
# sizes of dynamic dimensions when nothing else says (latency feeds, MAC counts)
DEFAULT_DIMS = {"batch": 1, "batch_size": 1, "sequence": 128, "sequence_length": 128}


def make_session(path: str | Path | bytes, threads: int = 1, opt_level: str = "all",
                 optimized_path: str | Path | None = None):
    """A CPU session with a fixed thread count and graph optimization level.

    ``path`` may also be a serialized model (bytes). ``optimized_path`` saves the graph ORT
    actually runs (machine-specific: inspect it, never ship it).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its ISA flags (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def fixed_batch(sess) -> int | None:
    """The model's fixed batch size, or None when the batch axis is dynamic."""
    dim = sess.get_inputs()[0].shape[0] if sess.get_inputs()[0].shape else None
    return dim if isinstance(dim, int) and dim > 0 else None


def run_batched(sess, feeds: dict[str, np.ndarray], batch_size: int = 1) -> list[np.ndarray]:
    """Every output of ``sess`` over all rows of ``feeds``, in the model's batch size (a dynamic
    batch: ``batch_size``, by default 1 as a deployed app calls it; dynamic int8 quantizes the
    activations per call, so the batch changes its outputs).

    A fixed-batch model gets its last partial batch padded by repeating the last row; the padded
    rows are dropped from the outputs.
    """
    fixed = fixed_batch(sess)
    bs = fixed or batch_size
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    n = len(next(iter(feeds.values())))
    chunks: list[list[np.ndarray]] = []
    for i in range(0, n, bs):
        part = {k: v[i : i + bs] for k, v in feeds.items()}
        m = len(next(iter(part.values())))
        if fixed and m < fixed:
            part = {k: np.concatenate([v, np.repeat(v[-1:], fixed - m, axis=0)]) for k, v in part.items()}
        chunks.append([o[:m] for o in sess.run(None, part)])
    return [np.concatenate(c) for c in zip(*chunks, strict=True)]


def timing_feed(sess, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One call's worth of real inputs: the model's fixed batch, else one row."""
    bs = fixed_batch(sess) or 1
    names = {i.name for i in sess.get_inputs()}
    return {k: v[:bs] for k, v in feeds.items() if k in names}


NBITS_MODULE = "onnxruntime.quantization.matmul_nbits_quantizer"


def nbits_quantizer():
    """ORT's ``matmul_nbits_quantizer`` module, imported without the ``logging.basicConfig`` it
    runs on import (that root handler, at INFO, would print every later log line of the
    process)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    module = importlib.import_module(NBITS_MODULE)
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
    root.setLevel(level)
    return module
