"""The ``data:`` section of the pipeline YAML (torch-free: ``compress validate`` never imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from compress.config.corpus import CorpusFields
from compress.config.preprocess import ImagePreprocess


class LMDataConfig(BaseModel):
    """task causal-lm: the text as one token stream cut into windows (the teacher's tokenizer).
    Training reads ``data.corpus`` (or ``path``); the test is WikiText-2's own test split, the
    same fixed slice for every model."""

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(256, ge=8, le=8192, description="Tokens per training and test window.")
    max_tokens: int = Field(
        200_000, ge=64, le=10_000_000_000, description="The distillation budget: training tokens "
        "read from the corpus (each epoch passes over them once).")
    val_tokens: int = Field(
        8192, ge=16, description="Tokens held out of the training text: they pick the epoch and "
        "judge the quantized precisions.")
    test_tokens: int = Field(
        16384, ge=16, description="The first tokens of the detokenised WikiText-2 test split: "
        "perplexity and agreement are measured on them.")
    calibration_windows: int = Field(
        8, ge=1, le=10_000, description="Training windows the layer importance (student.keep) "
        "is measured on.")


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["digits", "npz", "image_folder", "python"] = Field(
        description="digits: scikit-learn's handwritten digits (built in); npz: arrays in a .npz "
        "file; image_folder: one subfolder per class; python: 'pkg.mod:function' returning a "
        "Dataset or DataLoader."
    )
    path: Path | None = Field(None, description="The .npz file or the image folder.")
    python: str | None = Field(None, description="'pkg.mod:function' for source: python.")
    kwargs: dict = Field(default_factory=dict, description="Keyword arguments of the factory.")
    x_key: str = Field("x", description="npz: the array of inputs (N, C, H, W) or (N, H, W).")
    y_key: str = Field("y", description="npz: the array of integer labels.")
    image_size: int = Field(32, gt=0, le=4096, description="Images are resized to this square size.")
    channels: Literal[1, 3] = Field(1, description="image_folder: 1 for grayscale, 3 for RGB.")

    @model_validator(mode="after")
    def _needs(self):
        if self.source in ("npz", "image_folder") and self.path is None:
            raise ValueError(f"source {self.source} needs 'path'")
        if self.source == "python" and not self.python:
            raise ValueError("source python needs 'python: package.module:function'")
        return self


class TransferConfig(_Source):
    """An unlabeled set for distillation: the teacher labels it with its soft targets."""


class EvalSet(BaseModel):
    """Extra held-out data, measured with the task's metrics beside the test split: how the model
    does beyond the text (or images) it was distilled on."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Its name in the report.")
    path: Path | None = Field(None, description="text data: a file, one sentence a line.",
                              json_schema_extra={"must_exist": True})
    python: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'pkg.mod:function' returning a Dataset of (inputs, target) items, or a list "
                    "of sentences for text data.",
    )
    kwargs: dict = Field(default_factory=dict, description="Keyword arguments of the factory.")

    @model_validator(mode="after")
    def _one(self):
        if (self.path is None) == (self.python is None):
            raise ValueError("needs exactly one of 'path' or 'python'")
        return self


class DataConfig(_Source, CorpusFields):
    source: Literal["digits", "npz", "image_folder", "python", "text"] = Field(
        "digits", description=_Source.model_fields["source"].description + " text: one sentence "
        "a line in 'path', or without 'path' the built-in corpus (English sentences from Python's "
        "own documentation and standard-library docstrings)."
    )
    tokenizer: str | None = Field(
        None, description="text: the tokenizer's directory (default: the hf teacher's)."
    )
    max_length: int = Field(128, ge=2, le=8192, description="text: tokens kept per sentence.")
    lm: LMDataConfig | None = Field(
        None, description="task causal-lm: token windows of the text (set for that task: "
        "seq_len, max_tokens, val_tokens, test_tokens).")
    eval_sets: list[EvalSet] = Field(
        default_factory=list, description="Extra evaluation sets, each reported with the task's "
        "metrics beside the test split (never used for training or selection).",
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Validation split (picks epochs, layers, thresholds)."
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1,
        description="Held-out test split: every reported quality number is measured on it.",
    )
    batch_size: int = Field(64, gt=0, le=65536, description="Training batch size.")
    augment_shift: int = Field(
        0, ge=0, le=16, description="Random translation in pixels during training (0: off)."
    )
    transfer: TransferConfig | None = Field(
        None, description="Optional unlabeled transfer set for distillation."
    )
    preprocess: ImagePreprocess | None = Field(
        None, description="How a raw image becomes the model input, when the source cannot say "
        "(python factories, npz arrays that are not 8-bit pixels): see compress/config/preprocess.py."
    )
    num_classes: int | None = Field(
        None, ge=2, le=1_000_000,
        description="How many classes the models score, when the labels do not reach them all "
        "(a pretrained classifier's 1000 ImageNet classes on data that holds 3 of them). Every "
        "label must be below it. Default: the count of a factory's 'classes' list, else an ONNX "
        "teacher's output width, else the largest label + 1.",
    )

    @model_validator(mode="after")
    def _classes(self):
        if self.num_classes is not None and self.source == "text":
            raise ValueError("num_classes: applies to image data (digits, npz, image_folder, "
                             "python); text data takes its classes from its labels")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # num_classes unset is left out, so resume keys of configs without it stay as they were
        out = handler(self)
        if self.num_classes is None and isinstance(out, dict):
            out.pop("num_classes", None)
        if self.lm is None and isinstance(out, dict):
            out.pop("lm", None)
        return out

    @model_validator(mode="after")
    def _fractions(self):
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction must leave at least 10% for training "
                f"(got {self.val_fraction:g} + {self.test_fraction:g})"
            )
        return self


def data_fingerprint(cfg: DataConfig) -> dict:
    """What the data files are (hashes, or a folder's listing) for resume keys."""
    from compress.common.files import sha256_file

    out: dict = {}
    for where, p in (("data", cfg.path), ("transfer", cfg.transfer and cfg.transfer.path)):
        if p and Path(p).is_file():
            out[where] = sha256_file(p)
        elif p and Path(p).is_dir():
            out[where] = sorted((str(f.relative_to(p)), f.stat().st_size, int(f.stat().st_mtime))
                                for f in Path(p).rglob("*") if f.is_file())
    return out
