"""Build models from a spec, load checkpoints safely, and count params and MACs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.common.imports import import_callable
from compress.errors import InputError
from compress.models.cnn import FAMILIES


def build_model(spec: dict[str, Any], in_channels: int | None, num_classes: int | None,
                where: str) -> nn.Module:
    """Build a fresh model from ``{"arch": family, "kwargs": {...}}`` or ``{"python": ref, ...}``.

    Built-in families get ``in_channels`` and ``num_classes`` from the data; user factories get
    only their ``kwargs``. If the spec holds pruned ``widths``, layers are resized to them.
    """
    kwargs = dict(spec.get("kwargs") or {})
    if spec.get("causal_lm"):  # a depth- (and FFN-) pruned copy of a causal LM (weights load after)
        from compress.models.causal_lm import load_causal_lm
        from compress.models.layer_depth import keep_layers
        from compress.models.llm_width import shrink_ffn_, shrink_kv_groups_

        teacher, _ = load_causal_lm(spec["causal_lm"], f"{where}.causal_lm",
                                    bool(spec.get("trust_remote_code")))
        student = keep_layers(teacher, spec["layers"], f"{where}.layers")
        if spec.get("ffn_width"):
            shrink_ffn_(student, spec["ffn_width"])
        if spec.get("kv_heads"):
            shrink_kv_groups_(student, spec["kv_heads"])
        return student
    if spec.get("hf") or spec.get("layers") is not None:
        model = _build_hf(spec, where)
    elif spec.get("arch"):
        family = FAMILIES[spec["arch"]]
        if in_channels is None or num_classes is None:
            raise InputError(f"{where}.arch: the built-in {spec['arch']!r} family is an image "
                             "classifier; this data has no single image input with class labels")
        try:
            model = family(in_channels=in_channels, num_classes=num_classes, **kwargs)
        except (TypeError, ValueError) as e:
            raise InputError(f"{where}.kwargs: {e}") from e
    elif spec.get("python"):
        factory = import_callable(spec["python"], f"{where}.python")
        try:
            model = factory(**kwargs)
        except TypeError as e:
            raise InputError(f"{where}.kwargs: {spec['python']}: {e}") from e
        if not isinstance(model, nn.Module):
            raise InputError(
                f"{where}.python: {spec['python']} returned {type(model).__name__}, "
                "expected a torch.nn.Module"
            )
    else:
        raise InputError(f"{where}: needs 'arch' or 'python'")
    if spec.get("widths"):
        from compress.models.widths import apply_widths_

        apply_widths_(model, spec["widths"])
    return model


def _build_hf(spec: dict[str, Any], where: str) -> nn.Module:
    """An HF encoder as a sentence embedder, or a layer-drop copy of one (``layers``)."""
    from compress.models.hf import (
        SentenceEmbedder,
        SequenceClassifier,
        layer_drop_student,
        load_hf_model,
        resolve_hf_dir,
    )

    if spec.get("layers") is not None:
        teacher = _build_hf({"hf": spec["teacher_hf"], "trust_remote_code": spec.get("trust_remote_code"),
                             "num_labels": spec.get("num_labels")}, "teacher")
        return layer_drop_student(teacher, list(spec["layers"]), f"{where}.layers")
    path = resolve_hf_dir(spec["hf"], f"{where}.hf")
    encoder = load_hf_model(path, trust_remote_code=bool(spec.get("trust_remote_code")))
    if spec.get("num_labels"):  # a sequence classifier: the encoder plus a new linear head
        return SequenceClassifier(encoder, int(spec["num_labels"]))
    return SentenceEmbedder(encoder)


def read_state_dict(path: str | Path, where: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file or a torch state_dict (``weights_only=True``; no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{where}: file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any parse failure means the file is not a usable checkpoint
        raise InputError(
            f"{where}: cannot read checkpoint {path}: not a safetensors file or a torch "
            f"state_dict ({type(e).__name__})"
        ) from e
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{where}: {path} holds no state_dict of tensors")
    return state


def load_checkpoint_(model: nn.Module, path: str | Path, where: str) -> nn.Module:
    """Load weights into ``model`` in place; shape or key mismatches are user errors."""
    state = read_state_dict(path, where)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_first(unexpected)}")
        raise InputError(
            f"{where}: {path} does not match the architecture: {'; '.join(parts)}"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise InputError(
                f"{where}: {path} does not match the architecture: {k} has shape "
                f"{list(v.shape)} in the checkpoint, {list(own[k].shape)} in the model"
            )
    model.load_state_dict(state)
    return model


def _first(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def model_summary(model: nn.Module, example: torch.Tensor | tuple | dict) -> dict[str, int]:
    """Parameter and multiply-accumulate counts (torch-pruning's op counter).

    ``example`` is one tensor, a tuple of positional inputs, or a dict of named inputs.
    """
    import torch_pruning as tp

    # named inputs go positionally, in their order, as the task and ONNX export pass them
    args = tuple(example.values()) if isinstance(example, dict) else example
    args = args if isinstance(args, tuple) else (args,)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, args)
    model.train(was_training)
    return {"params": int(params), "macs": int(macs)}
