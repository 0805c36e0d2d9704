"""The closed registry of tasks: a config names one by kind (the names the config accepts are
``compress.config.pipeline.TASK_NAMES``; a test keeps the two equal)."""

from __future__ import annotations

import importlib

from compress.tasks.base import Task

TASKS: dict[str, str] = {
    "classification": "compress.tasks.classification:ClassificationTask",
    "embedding": "compress.tasks.embedding:EmbeddingTask",
    "sequence-classification": "compress.tasks.sequence_classification:SequenceClassificationTask",
    "causal-lm": "compress.tasks.causal_lm:CausalLMTask",
}


def make_task(name: str, **kwargs) -> Task:
    """An instance of the task registered as ``name``."""
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
