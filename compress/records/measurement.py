"""The typed measurement of one model: a report.json ``models`` entry and a benchmark
stage's ``measurements`` in stage.json."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from compress.records.base import Record


class CostRatio(Record):
    """A student's per-query cost against an LLM teacher's copies, from one interleaved timing:
    each copy's p50 over the student's (stored under the copy's model name, ``teacher`` for the
    fp32 LLM), and the student's own p50 in that timing."""

    model_config = ConfigDict(extra="allow")  # one ratio per LLM copy, keyed by its model name

    teacher: float
    student_p50_ms: float

    def vs(self, name: str) -> float | None:
        """The ratio against the LLM copy ``name`` (None when it was not timed)."""
        if name == "teacher":
            return self.teacher
        value = (self.model_extra or {}).get(name)
        return None if value is None else float(value)


class ModelMeasurement(Record):
    """One model measured in ONNX Runtime on the file that ships: the report.json model entry.

    ``accuracy`` is the task's headline quality (top-1 accuracy, or mean cosine to the teacher for
    embeddings); ``quality`` holds every metric of the task; ``split`` names the data split they
    were measured on (``test``, never the one that chose epochs or thresholds).
    """

    omit_none: ClassVar[tuple[str, ...]] = ("quality_samples", "llm_agreement", "cost_ratio_vs_llm",
                                            "llm_prompt_tokens", "ttft_ms", "decode_tokens_per_s")

    name: str
    stage: str
    path: str  # relative to the run directory
    sha256: str
    bytes: int
    params: int | None
    macs: int | None
    precision: str
    accuracy: float
    # reports written before models carried their task say nothing of these five: what the
    # report then measured (classification accuracy on the test split) stands in
    split: str = "test"
    quality: dict[str, float] = Field(default_factory=dict)
    task: str = "classification"
    metric: str = "accuracy"
    higher_is_better: bool = True
    latency_ms: dict[str, float]
    threads: int
    opt_level: str
    runs: int
    samples: str | None = None  # raw per-run latencies (ms), a .npy relative to the run directory
    throughput_per_s: float | None = None
    session_create_ms: float | None = None
    speedup_vs_teacher: float | None = None
    latency_by_length: dict[str, dict[str, float]] | None = None  # sequence models: p50 etc. per length
    eval_sets: dict[str, dict[str, float]] | None = None  # quality on data.eval_sets, by name
    quality_samples: int | None = None  # how many samples of `split` the quality was measured on
    clock: str | None = None  # latency clock: "cpu" (calling thread's CPU time, 1 thread) or "wall"
    # an llm teacher's run (compress.bench.llm): a student's top-1 agreement with the LLM's labels
    # on the test split; its per-query cost ratios, each LLM copy's p50 over the student's p50
    # from one interleaved timing ({"teacher": .., "teacher-int8": .., "student_p50_ms": ..});
    # and, on the LLM's own rows, the prompt length it was timed at
    llm_agreement: float | None = None
    cost_ratio_vs_llm: CostRatio | None = None
    llm_prompt_tokens: int | None = None
    # a causal LM's KV-cache decoder (compress.bench.decoder), by prompt length ("ctx128"): the
    # time to the first token (the prefill) and the greedy decode rate after it, medians
    ttft_ms: dict[str, float] | None = None
    decode_tokens_per_s: dict[str, float] | None = None

    @property
    def p50(self) -> float:
        return self.latency_ms["p50"]

    @property
    def p90(self) -> float | None:
        return self.latency_ms.get("p90")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeasurement:
        return cls.model_validate(d)
