"""What the stages of a causal-lm run report (``task: causal-lm``), typed like the other stage
reports (``compress.records.stage_reports`` reads them back by stage kind)."""

from __future__ import annotations

from typing import Any, ClassVar

from compress.records.base import History, Record, StageReport


class LMTeacherReport(StageReport):
    """A causal LM exported as one KV-cache decoder graph (parity checked against torch), its
    own quantized decoders beside it and its tokenizer saved for the bundle."""

    kind: ClassVar[str] = "teacher"

    llm: str  # what teacher.llm named
    params: int
    layers: int
    bytes: int
    max_abs_logit_diff: float  # ORT vs torch over the prefill and parity_steps decode steps
    parity_steps: int
    greedy_tokens_equal: bool
    peers: dict[str, int]  # the teacher's quantized decoders: precision -> bytes
    stop_ids: list[int]
    max_context: int
    tokenizer: str  # the tokenizer file in the teacher's folder


class WidthPruning(Record):
    """``student.width``: every kept block's FFN (and KV groups) pruned to one width by
    activation importance, before distillation."""

    intermediate_before: int
    intermediate_after: int  # the kept fraction rounded to a multiple of round_to
    round_to: int
    kv_heads_before: int
    kv_heads_after: int  # each with its query heads
    params_before: int  # the depth-pruned student's, before its width was pruned
    params_after: int


class LMDistillReport(StageReport):
    """A depth-pruned (and optionally width-pruned) student distilled on the teacher's
    cached top-k log-probabilities."""

    kind: ClassVar[str] = "distill"
    metric_keys: ClassVar[dict[str, str]] = {"val": "val_{metric}"}
    omit_none: ClassVar[tuple[str, ...]] = ("distances", "width")

    metric: str  # perplexity
    val: float  # validation perplexity of the epoch kept (epoch 0: the student untrained)
    best_epoch: int
    teacher_val: float  # the teacher's validation perplexity, in torch
    untrained_val: float  # the student's before any training
    history: History
    params: int
    layers: list[int]  # the teacher blocks the student kept
    distances: list[float] | None = None  # each teacher block's angular distance (keep: N)
    top_k: int
    temperature: float
    train_tokens: int
    tokens_per_s: float  # training throughput
    cache_hit: bool  # the teacher's top-k came from the disk cache
    width: WidthPruning | None = None  # student.width: the pruning before distillation

    def histories(self) -> list[tuple[str, History]]:
        return [("training", self.history)] if self.history else []


class KVExportReport(StageReport):
    """The student's KV-cache decoder graph against torch: prefill plus greedy decode steps."""

    kind: ClassVar[str] = "export"

    max_abs_logit_diff: float
    parity_steps: int
    greedy_tokens_equal: bool
    bytes: int
    num_layers: int
    num_kv_heads: int
    head_dim: int


class DecoderTrial(Record):
    """One quantized decoder judged against the fp32 one on the validation windows."""

    precision: str
    bytes: int
    perplexity: float
    perplexity_ratio: float  # over the fp32 decoder's
    tokens_per_s: float  # decode, at the timing context, 1 thread, interleaved with fp32
    speedup: float  # its tokens/s over fp32's
    within_budget: bool  # perplexity_ratio <= max_perplexity_ratio
    faster: bool  # speedup >= min_speedup


class DecoderQuantizeReport(StageReport):
    kind: ClassVar[str] = "quantize"

    fp32_perplexity: float
    fp32_tokens_per_s: float
    trials: list[DecoderTrial]
    kept: str  # the precision passed on: fp32 or one of the trials'
    reason: str
    context: int  # the prompt length decode speed was timed at
    val_windows: int
    threads: int


class LLMBundleReport(StageReport):
    """A bundle that generates with onnxruntime and tokenizers alone (``runner.py``)."""

    kind: ClassVar[str] = "package"

    bundle: str
    model: str
    files: dict[str, int]  # bundle file -> bytes
    kv_cache: dict[str, Any]  # the manifest's layout (what the runner reads)
    runner_tokens: list[int]  # the bundle runner's greedy tokens on a test prompt
    runner_tokens_equal: bool  # ... equal to the decoder graph's own greedy tokens


REPORTS_LM: dict[str, tuple[type[StageReport], ...]] = {
    "teacher": (LMTeacherReport,),
    "distill": (LMDistillReport,),
    "export": (KVExportReport,),
    "quantize": (DecoderQuantizeReport,),
    "package": (LLMBundleReport,),
}
