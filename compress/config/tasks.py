"""What each task reads of the config, torch-free, so ``compress validate`` refuses a key that the
run's task would ignore. The task classes (``compress.tasks``) point at their entry here:
``ClassificationTask.uses is TASK_USES["classification"]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compress.config.stages import QUIET_DEFAULTS

ParityCheck = Literal["top1_agreement", "cosine_min"]


@dataclass(frozen=True)
class TaskUses:
    """The config a task reads besides what every task reads.

    Attributes:
        soft_targets: its distillation loss takes the KD pair (``temperature``, ``alpha`` of
            distill, prune and quantize.qat).
        labels: its losses read labels (``distill.use_labels`` means something).
        parity: what export parity compares besides the max abs difference (``atol``):
            ``top1_agreement`` reads ``export.min_agreement``, ``cosine_min`` reads
            ``export.min_cosine``.
        sequences: its inputs vary in length (``group_by_length`` means something).
        layerwise: its distillation can add the layer-wise losses (``distill.hidden_weight``,
            ``attention_weight``): the task class has ``layerwise`` (a test keeps the two equal).
        generates: a causal LM with a KV cache: its stages read the generation keys
            (``GENERATION_KEYS``) and ignore those of fixed-shape classifiers (``FIXED_SHAPE_KEYS``).
    """

    soft_targets: bool = False
    labels: bool = False
    parity: tuple[ParityCheck, ...] = ()
    sequences: bool = False
    layerwise: bool = False
    generates: bool = False

    def ignored(self, fields: frozenset[str] | set[str]) -> dict[str, str]:
        """Of a config's ``fields``, those this task ignores, each with the reason."""
        why = {}
        if not self.soft_targets:
            why |= dict.fromkeys(("temperature", "alpha"),
                                 "its distillation loss has no soft targets")
        if not self.labels:
            why["use_labels"] = "its losses read no labels"
        if not self.sequences:
            why["group_by_length"] = "its inputs all have one shape"
        if self.generates:
            why |= FIXED_SHAPE_KEYS
        else:
            why |= dict.fromkeys(GENERATION_KEYS, "it is no causal LM (task: causal-lm reads it)")
        judged = ", ".join(("max abs diff", *self.parity))
        for check, key in (("top1_agreement", "min_agreement"), ("cosine_min", "min_cosine")):
            if check not in self.parity:
                why[key] = f"its export parity judges {judged}"
        return {k: v for k, v in why.items() if k in fields}


# keys only a causal LM's stages read (quantize, export, benchmark)
GENERATION_KEYS = QUIET_DEFAULTS
_DECODER = "a causal LM is quantized, exported and measured as a KV-cache decoder"
# keys of the fixed-shape stages that a causal LM's stages ignore, each with the reason
FIXED_SHAPE_KEYS: dict[str, str] = {
    **dict.fromkeys(("mode", "per_channel", "calibrate_method", "calibration_samples",
                     "max_float_layers", "exclude", "op_types", "max_accuracy_drop"),
                    f"{_DECODER}: quantize.precisions and max_perplexity_ratio decide"),
    **dict.fromkeys(("dynamic_batch", "exporter", "parity_samples", "seq_lens", "require",
                     "max_partitions", "fix_shapes", "eval_samples", "platform"),
                    f"{_DECODER} (one graph with past_key_values inputs)"),
    **dict.fromkeys(("hints", "hint_weight", "use_transfer"),
                    "it distils from the teacher's cached top-k log-probabilities"),
    **dict.fromkeys(("precision", "channels_last", "compile", "workers", "checkpoint_every_steps"),
                    "its distillation loop (compress.train.causal_lm) trains in fp32, one process, "
                    "without mid-run checkpoints"),
    "seq_len": "its windows are data.lm.seq_len long; the KV-cache graph takes any length",
}

TASK_USES: dict[str, TaskUses] = {
    "classification": TaskUses(soft_targets=True, labels=True, parity=("top1_agreement",)),
    "embedding": TaskUses(parity=("cosine_min",), sequences=True, layerwise=True),
    "sequence-classification": TaskUses(soft_targets=True, labels=True, parity=("top1_agreement",),
                                        sequences=True, layerwise=True),
    "causal-lm": TaskUses(soft_targets=True, generates=True),
}
