"""The LLM's prompt scoring as one ONNX graph: token ids and attention mask in, each label's
verbaliser log-probability out. One forward pass, no KV cache; a verbaliser of several tokens is
summed teacher-forced inside the same pass (see ``compress.tasks.llm_labels.score_verbalisers``).

Public API::

    PromptScorer(model, verbaliser_ids)           # nn.Module: (input_ids, attention_mask) -> [B, L]
    export_prompt_scorer(model, verbaliser_ids, path, example_ids) -> Path
    scorer_parity(path, model, verbaliser_ids, rows) -> float   # max |ORT - torch|, batch 1 each
    check_scorer_parity(path, model, verbaliser_ids, rows, atol=1e-4) -> float  # raises past atol
    quantize_scorer_int8(src, dst, mode="dynamic"|"weight-only") -> Path  # the LLM's own int8
    ort_scores(path_or_session, rows) -> np.ndarray  # [n, L], one row at a time

The graph takes right-padded rows (``attention_mask`` 1 on real tokens): the sequence axis is
dynamic; so is the batch axis, though latency is measured at batch 1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.errors import StageError
from compress.export.torch_onnx import export_onnx
from compress.tasks.llm_labels import score_verbalisers, verbaliser_table

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "label_logprobs"


class PromptScorer(nn.Module):
    """A causal LM that returns the verbaliser log-probs of right-padded prompts ([B, labels])."""

    def __init__(self, model: nn.Module, verbaliser_ids: Sequence[Sequence[int]]):
        super().__init__()
        self.model = model
        tokens, valid = verbaliser_table(verbaliser_ids)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("valid", valid, persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return score_verbalisers(self.model, input_ids, attention_mask, self.tokens, self.valid)


def _feeds(row: Sequence[int]) -> dict[str, np.ndarray]:
    ids = np.asarray([list(row)], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def export_prompt_scorer(model: nn.Module, verbaliser_ids: Sequence[Sequence[int]],
                         path: str | Path, example_ids: Sequence[int], opset: int = 18) -> Path:
    """Write the scorer to ``path`` (weights inside the file: keep it under 2 GB), traced on
    ``example_ids`` with a dynamic batch and sequence. The model runs with eager attention
    while it is traced (restored after): the SDPA mask path does not trace to ONNX cleanly."""
    scorer = PromptScorer(model, verbaliser_ids).eval()
    example = {k: torch.from_numpy(v) for k, v in _feeds(example_ids).items()}
    config = model.config
    saved = getattr(config, "_attn_implementation", None)
    try:
        if saved is not None:
            model.set_attn_implementation("eager")
        return export_onnx(scorer, example, path, opset=opset, exporter="torchscript",
                           output_names=(OUTPUT_NAME,),
                           dynamic_axes={k: {0: "batch", 1: "sequence"} for k in INPUT_NAMES})
    finally:
        if saved is not None:
            model.set_attn_implementation(saved)


def ort_scores(path_or_session, rows: Sequence[Sequence[int]]) -> np.ndarray:
    """``[n, labels]`` from ONNX Runtime, each row alone at batch 1 (as a query runs)."""
    from compress.common.ort import make_session

    sess = make_session(path_or_session) if isinstance(path_or_session, str | Path | bytes) \
        else path_or_session
    return np.concatenate([sess.run([OUTPUT_NAME], _feeds(r))[0] for r in rows]).astype(np.float64)


def scorer_parity(path: str | Path, model: nn.Module, verbaliser_ids: Sequence[Sequence[int]],
                  rows: Sequence[Sequence[int]]) -> float:
    """Max |ORT - torch| over ``rows``' label log-probs, each row at batch 1 in both."""
    scorer = PromptScorer(model, verbaliser_ids).eval()
    with torch.inference_mode():
        ref = np.concatenate([
            scorer(*(torch.from_numpy(v) for v in _feeds(r).values())).double().numpy()
            for r in rows])
    return float(np.abs(ort_scores(path, rows) - ref).max())


def check_scorer_parity(path: str | Path, model: nn.Module,
                        verbaliser_ids: Sequence[Sequence[int]], rows: Sequence[Sequence[int]],
                        atol: float = 1e-4) -> float:
    """:func:`scorer_parity`, raising StageError past ``atol``."""
    diff = scorer_parity(path, model, verbaliser_ids, rows)
    if not diff <= atol:
        raise StageError(f"{path}: label log-probs differ from torch by {diff:.3g} "
                         f"(allowed {atol:g}) over {len(rows)} prompts")
    return diff


def quantize_scorer_int8(src: str | Path, dst: str | Path, mode: str = "dynamic",
                         block_size: int = 32) -> Path:
    """An int8 copy of the scorer, written atomically: what a user who ships the LLM itself
    would ship.

    ``mode="dynamic"``: ``quantize_dynamic``, int8 weights and activations quantised per tensor
    on each call. ``mode="weight-only"``: ORT's ``MatMulNBits`` with 8-bit weights in blocks of
    ``block_size`` (symmetric, ``accuracy_level`` 4: int8 kernels on VNNI CPUs).

    Neither wins on SmolLM2 (benchmarks/llm_zero_shot.py, 300 snippets, AMD EPYC with AVX2 and
    no VNNI, 1 thread, 71-token prompt): dynamic is 1.7x faster than fp32 but agrees with it on
    only 53% of the calibrated answers (its per-tensor activation scale meets an LLM's outlier
    channels); weight-only agrees on 98% but ran 1.5x slower than fp32 there.
    """
    from compress.common.files import atomic_write

    if mode not in ("weight-only", "dynamic"):
        raise ValueError(f"mode must be 'weight-only' or 'dynamic' (got {mode!r})")

    def write(tmp: Path) -> None:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT's quantizers log advice and progress on the root logger
        try:
            if mode == "dynamic":  # every op type it knows: the embedding Gather too (165 MB)
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
            else:
                _weight_only_int8(src, tmp, block_size)
        finally:
            root.setLevel(level)

    return atomic_write(dst, write)


def _weight_only_int8(src: str | Path, dst: Path, block_size: int) -> None:
    """ORT's ``MatMulNBits`` at 8 bits. (quant/decoder.py makes the decoder's; export may not
    import quant, which imports export.)"""
    import onnx

    from compress.common.ort import nbits_quantizer

    nbits = nbits_quantizer()
    config = nbits.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True,
                                                accuracy_level=4, bits=8)
    quantizer = nbits.MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=config)
    log = logging.getLogger(nbits.__name__)
    level = log.level
    log.setLevel(logging.WARNING)  # it logs a line per node it skips
    try:
        quantizer.process()
    finally:
        log.setLevel(level)
    quantizer.model.save_model_to_file(str(dst), False)
