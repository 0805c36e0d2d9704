"""Every stage kind's config model, torch-free: ``compress validate`` and ``compress schema``
read these without importing torch, torch-pruning or any stage implementation.

Each config declares once which model format its stage takes and which it gives; validation
and the engine both follow that declaration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from compress.config.train import Part, SoftTargets, TrainConfig

Format = Literal["torch", "onnx"]
ANY: tuple[Format, ...] = ("torch", "onnx")


# the causal-lm keys (compress.config.tasks.GENERATION_KEYS) left out of a dump at their
# defaults, so the resume keys of other tasks' stages stay as they were before these keys
QUIET_DEFAULTS = ("precisions", "max_perplexity_ratio", "parity_steps", "prompts", "new_tokens",
                  "contexts", "rounds")


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        out = handler(self)
        if isinstance(out, dict):
            for k in QUIET_DEFAULTS:
                if k in out and k not in self.model_fields_set:
                    out.pop(k)
        return out

    def takes(self) -> tuple[Format, ...]:
        """The model formats this stage accepts as input."""
        return ("torch",)

    def gives(self, given: Format) -> Format:
        """The format of the model this stage passes on, given its input's format."""
        return given


# -- how latency is measured (the pipeline's top-level ``target:``) -------------------------------

class TargetConfig(BaseModel):
    """How every latency in the run is measured: the benchmark stage, prune's latency budget and
    per-step timing, and quantize's keep-int8 speed check all read this one section."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(1, ge=1, le=256, description="ORT intra-op threads (1 is the stable figure).")
    opt_level: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ORT graph optimization level. QDQ int8 models need extended or all."
    )
    runs: int = Field(300, ge=5, le=1_000_000, description="Timed runs per model.")
    warmup: int = Field(30, ge=0, le=100_000, description="Untimed runs per model first.")
    isa: Literal["auto", "x86-vnni", "x86-avx2", "arm64"] = Field(
        "auto", description="CPU family int8 types are chosen for; auto reads this CPU's flags."
    )


# -- distill ------------------------------------------------------------------------------------

class Hint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student: str = Field(description="Student module name (as in named_modules()).")
    teacher: str = Field(description="Teacher module name whose output the student should match.")


class DistillConfig(StageConfig, TrainConfig, SoftTargets):
    epochs: int = Field(15, ge=0, le=10000, description="Passes over the training set.")
    lr: float = Field(1e-2, gt=0, le=10, description="Peak learning rate.")
    hints: list[Hint] = Field(default_factory=list, description="FitNets hint pairs.")
    hint_weight: float = Field(1.0, ge=0, description="Weight of each hint's MSE loss.")
    use_labels: bool = Field(
        True, description="false: learn from the teacher's soft targets alone (labels unused)."
    )
    use_transfer: bool = Field(True, description="Add data.transfer (unlabeled) when configured.")
    hidden_weight: float = Field(
        0.0, ge=0, description="embedding task: weight of the hidden-state MSE between each kept "
        "student layer and the teacher layer it was copied from (needs student.layers).",
    )
    attention_weight: float = Field(
        0.0, ge=0, description="embedding task: weight of the attention-distribution KL "
        "(TinyBERT-style) between the same layer pairs.",
    )

    def takes(self) -> tuple[Format, ...]:
        # an ONNX teacher, as the first stage gets it: the student comes from `student:` and
        # learns from the teacher's outputs in ONNX Runtime (rules.check_stage_order: first only)
        return ("torch", "onnx")

    def gives(self, given: Format) -> Format:
        return "torch"


# -- prune --------------------------------------------------------------------------------------

Importance = Literal["l1", "l2", "group_l2", "bn_scale", "taylor", "lamp", "random"]


class PruneConfig(StageConfig, TrainConfig, SoftTargets):
    """Set exactly one target: ``ratio``, ``macs`` or ``latency_ms``."""

    ratio: float | None = Field(None, gt=0, lt=1, description="Target: fraction of channels removed (0.5 halves each layer).")
    macs: float | None = Field(None, gt=0, description="Target: MACs budget, a fraction of the input's MACs (<= 1) or a count (> 1).")
    latency_ms: float | None = Field(None, gt=0, description="Target: ORT p50 budget in ms, timed as the pipeline's `target:` says.")
    importance: Importance = Field("group_l2", description="Channel importance criterion.")
    scope: Literal["layer", "global"] = Field("layer", description="Rank channels within each layer, or across the model.")
    ignore: list[str] = Field(default_factory=list, description="Module-name globs left unpruned.")
    keep_head: bool = Field(True, description="Keep the layers that produce the outputs (the classifier head).")
    round_to: int = Field(8, ge=1, le=1024, description="Keep channel counts a multiple of this.")
    max_ratio: float = Field(0.8, gt=0, lt=1, description="Most of any layer's channels ever removed.")
    head_ratio: float | None = Field(None, ge=0, lt=1, description="Fraction of attention heads removed (HF attention); default: the channel ratio.")
    steps: int = Field(1, ge=1, le=100, description="Steps to reach `ratio`, each followed by recovery.")
    step_ratio: float = Field(0.1, gt=0, lt=1, description="macs/latency_ms targets: channel ratio added per step until the budget holds.")
    recovery: Literal["kd", "labels"] = Field("kd", description="kd: distill from the teacher (labels when there is none); labels: fine-tune.")
    epochs: int = Field(2, ge=0, le=10000, description="Recovery epochs after each step (0: BN re-estimate only).")
    bn_batches: int = Field(20, ge=0, le=10000, description="Batches for the BatchNorm re-estimate (0: off).")
    taylor_batches: int = Field(4, ge=1, le=1000, description="Batches of gradients for `taylor`.")
    measure_latency: bool = Field(True, description="Time every step on ORT (always on for latency_ms).")
    exporter: Literal["torchscript", "dynamo"] = Field("torchscript", description="ONNX exporter for the per-step timing (torchscript: same ops, seconds faster).")

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        given = [k for k in ("ratio", "macs", "latency_ms") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one target of ratio, macs, latency_ms (got {', '.join(given) or 'none'})"
            )
        if self.ratio is not None and self.ratio > self.max_ratio:
            raise ValueError(f"ratio {self.ratio} is above max_ratio {self.max_ratio}")
        return self

    @property
    def target(self) -> str:
        return next(k for k in ("ratio", "macs", "latency_ms") if getattr(self, k) is not None)


# -- export -------------------------------------------------------------------------------------

class ParityLimits(Part):
    """How close ONNX Runtime must come to PyTorch on the same test inputs. Every task is held to
    ``atol``; the task says which of the others it judges (``compress.config.tasks``)."""

    atol: float = Field(1e-3, gt=0, description="Parity: max abs difference of outputs vs PyTorch.")
    min_agreement: float = Field(
        0.99, ge=0, le=1, description="Parity, classification: top-1 agreement, at least."
    )
    min_cosine: float = Field(
        0.9999, ge=0, le=1, description="Parity, embedding: least cosine of any output row."
    )


class ExportConfig(StageConfig, ParityLimits):
    opset: int = Field(18, ge=13, le=23, description="ONNX opset.")
    dynamic_batch: bool = Field(
        False, description="A dynamic batch axis; mobile runtimes want fixed shapes (false)."
    )
    batch_size: int = Field(1, gt=0, le=4096, description="The fixed batch size when not dynamic.")
    seq_len: int = Field(
        128, gt=0, le=8192, description="Sequence models: the fixed length when dynamic_batch is "
        "false (mobile); with dynamic_batch the batch and sequence axes are both dynamic.",
    )
    exporter: Literal["dynamo", "torchscript"] = Field(
        "dynamo", description="torch.onnx exporter: dynamo (default) or the legacy TorchScript one."
    )
    parity_samples: int = Field(256, gt=0, description="Test inputs the parity check runs on.")
    parity_steps: int = Field(
        16, ge=1, le=512, description="causal-lm: greedy decode steps after the prefill that the "
        "KV-cache parity check compares with torch (every step's logits within atol, the tokens "
        "equal).")

    def gives(self, given: Format) -> Format:
        return "onnx"


# -- quantize -----------------------------------------------------------------------------------

class QATConfig(TrainConfig, SoftTargets):
    """Fake-quant fine-tuning; the loss is KD from the teacher when the pipeline has one."""

    epochs: int = Field(3, ge=1, le=10000)
    lr: float = Field(5e-4, gt=0, le=10)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    opset: int = Field(18, ge=13, le=23, description="Opset of the exported QDQ ONNX.")
    batch_size_onnx: int = Field(1, gt=0, le=4096, description="Fixed batch of the exported ONNX.")
    fold_bn: bool = Field(True, description="Fold batch norm into convs before QAT (frozen stats); "
                          "false trains it too and converts much slower.")


class QuantizeConfig(StageConfig):
    mode: Literal["static", "dynamic", "auto", "qat"] = Field(
        "static", description="static: PTQ with calibration (CNNs); dynamic: weights only, "
        "activations at run time (transformers, RNNs); auto: both, the fastest that meets the "
        "accuracy limit wins; qat: fake-quant training in PyTorch."
    )
    per_channel: bool = Field(True, description="Per-channel weight scales (per-tensor loses accuracy).")
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(
        256, ge=1, le=100_000, description="Training-split inputs used to calibrate (never validation)."
    )
    max_accuracy_drop: float = Field(
        0.005, ge=0, le=1, description="Largest ORT top-1 drop vs fp32, as a fraction like every "
        "accuracy in the report and gates.max_accuracy_drop (0.005 = half a percentage point)."
    )
    min_cosine: float = Field(
        0.98, ge=0, le=1, description="Models without labels (dynamic): least mean output cosine."
    )
    max_float_layers: int = Field(
        8, ge=0, le=1000, description="Fallback: at most this many sensitive tensors kept in float "
        "(each with the nodes that make and read it)."
    )
    min_speedup: float = Field(
        1.05, gt=0, le=100, description="int8 is kept only if fp32 p50 / int8 p50 reaches this."
    )
    if_not_met: Literal["fail", "keep_fp32"] = Field(
        "fail", description="No int8 model meets max_accuracy_drop: fail (exit 3) or keep fp32."
    )
    exclude: list[str] = Field(default_factory=list, description="ONNX node names kept in float.")
    op_types: list[str] | None = Field(None, description="ONNX op types to quantize (default: all).")
    qat: QATConfig | None = Field(None, description="Training settings for mode: qat.")
    precisions: list[Literal["int8-dynamic", "int8", "int4"]] = Field(
        default_factory=lambda: ["int8", "int4"], min_length=1,
        description="causal-lm: the decoder precisions tried: int8-dynamic (ORT dynamic int8), "
        "int8 and int4 (weight-only MatMulNBits, blocks of 32, accuracy_level 4); the fastest "
        "within max_perplexity_ratio and min_speedup is kept.")
    max_perplexity_ratio: float = Field(
        1.05, ge=1, le=100, description="causal-lm: a precision's validation perplexity over the "
        "fp32 decoder's, at most.")

    @model_validator(mode="after")
    def _qat_section(self):
        if self.qat is not None and self.mode != "qat":
            raise ValueError(f"'qat' settings apply to mode: qat only (mode is {self.mode})")
        if self.mode == "qat" and self.qat is None:
            self.qat = QATConfig()
        return self

    def takes(self) -> tuple[Format, ...]:
        return ("torch",) if self.mode == "qat" else ("onnx",)

    def gives(self, given: Format) -> Format:
        return "onnx"


# -- benchmark ----------------------------------------------------------------------------------

class BenchmarkConfig(StageConfig):
    """Latency settings come from the pipeline's ``target:`` section; quality from the test split."""

    max_samples: int | None = Field(
        None, gt=0, description="Test samples used for quality (default: the whole test split)."
    )
    seq_lens: list[int | Literal["median"]] = Field(
        default_factory=lambda: [128, "median"],
        description="Sequence models: the input lengths latency is measured at (the first is the "
        "headline; 'median' is the test split's median token count). Fixed-shape models are "
        "measured at their own length.",
    )

    prompts: int = Field(
        16, ge=1, le=10_000, description="causal-lm: held-out test prompts whose greedy "
        "continuation is compared with the teacher's, token for token.")
    new_tokens: int = Field(
        32, ge=1, le=4096, description="causal-lm: tokens of each greedy continuation, and decode "
        "steps of each timing round.")
    contexts: list[int] = Field(
        default_factory=lambda: [128], min_length=1, description="causal-lm: prompt lengths at "
        "which time to first token and decode tokens/s are measured (the first is the headline).")
    rounds: int = Field(
        5, ge=1, le=1000, description="causal-lm: timing rounds, every model once per round "
        "(interleaved); the median is reported.")

    def takes(self) -> tuple[Format, ...]:
        return ANY


# -- package ------------------------------------------------------------------------------------

class PackageConfig(StageConfig):
    """Write a deploy bundle of the final model and check its mobile readiness."""

    platform: Literal["arm", "amd64"] = Field(
        "arm", description="ORT-format target: arm for phones and ARM edge boxes, amd64 for x86.")
    require: list[Literal["nnapi", "coreml"]] = Field(
        default_factory=list,
        description="Execution providers that must take every node of the mobile variant; "
                    "the stage fails (exit 3) naming the unsupported ops otherwise.")
    max_partitions: int | None = Field(
        None, ge=1, description="For each required provider, the most graph partitions allowed "
                                "(every partition boundary is a CPU hand-over).")
    eval_samples: int = Field(
        64, ge=1, le=100_000, description="Test samples stored in eval.npz with expected outputs.")
    fix_shapes: bool = Field(
        True, description="Fix a dynamic batch to 1 in the mobile variant (NNAPI needs fixed "
                          "shapes).")

    def takes(self) -> tuple[Format, ...]:
        return ("onnx",)


# -- the closed map of stage kinds to their configs (implementations: compress.stages) -----------

CONFIGS: dict[str, type[StageConfig]] = {
    "distill": DistillConfig,
    "prune": PruneConfig,
    "export": ExportConfig,
    "quantize": QuantizeConfig,
    "benchmark": BenchmarkConfig,
    "package": PackageConfig,
}
KINDS: tuple[str, ...] = tuple(CONFIGS)
