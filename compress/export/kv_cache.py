"""A causal LM as one ONNX decoder graph with a KV cache, and its parity against torch.

The graph (batch 1 at run time; every length axis is dynamic):

- inputs: ``input_ids`` [B, S], ``attention_mask`` [B, P+S], ``position_ids`` [B, S], and per
  layer ``past_key_values.{i}.key`` / ``.value`` [B, kv_heads, P, head_dim];
- outputs: ``logits`` [B, S, vocab] and ``present.{i}.key`` / ``.value`` [B, kv_heads, P+S,
  head_dim].

The prefill feeds a past of length 0 (``P = 0``) and the whole prompt; each decode step feeds one
token and the previous step's ``present`` tensors as ``past``. The graph comes from the
TorchScript exporter (``dynamo=False``) tracing a wrapper that builds a ``DynamicCache`` from the
flat past tensors: with torch 2.13 and transformers 5.25 that traces LlamaForCausalLM in about
5 s on a tiny model, and one graph serves prefill and decode (parity 1e-7 on a tiny random Llama).

Public API::

    SUPPORTED_ARCHITECTURES                       # the causal LMs the exporter knows
    KVCacheLayout                                 # layers, kv heads, head dim, names; .manifest()
    kv_layout(model) -> KVCacheLayout             # InputError naming an unknown architecture
    export_kv_decoder(model, path, opset=17) -> KVCacheLayout   # written atomically
    greedy_onnx(path_or_session, layout, prompt_ids, steps) -> (tokens, last-position logits)
    prefill_logits(path_or_session, layout, ids) -> logits [S, vocab]   # one prompt, empty past
    kv_parity(path, model, prompt_ids, steps=16) -> KVParity    # max |ORT - torch|, tokens
    check_kv_parity(path, model, prompt_ids, steps=16, atol=1e-3) -> KVParity  # StageError past it
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.errors import InputError, StageError

if TYPE_CHECKING:
    from torch import nn

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
PAST = "past_key_values.{i}.{kind}"
PRESENT = "present.{i}.{kind}"


@dataclass(frozen=True)
class KVCacheLayout:
    """What a generate loop needs to know about the graph's cache."""

    architecture: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    @property
    def past_names(self) -> list[str]:
        return [PAST.format(i=i, kind=k) for i in range(self.num_layers) for k in ("key", "value")]

    @property
    def present_names(self) -> list[str]:
        return [PRESENT.format(i=i, kind=k) for i in range(self.num_layers)
                for k in ("key", "value")]

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "position_ids", *self.past_names]

    @property
    def output_names(self) -> list[str]:
        return ["logits", *self.present_names]

    @classmethod
    def from_manifest(cls, kv: dict) -> KVCacheLayout:
        """The layout that :meth:`manifest` wrote."""
        return cls(kv["architecture"], kv["num_layers"], kv["num_kv_heads"], kv["head_dim"],
                   kv["vocab_size"])

    def manifest(self, stop_ids: Sequence[int], max_context: int) -> dict:
        """The ``kv_cache`` section of a bundle manifest, as ``bundle/llm_runner.py`` reads it."""
        return {"architecture": self.architecture, "num_layers": self.num_layers,
                "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim,
                "vocab_size": self.vocab_size, "past": PAST, "present": PRESENT,
                "past_axis": 2, "position_ids": True, "dtype": "float32",
                "stop_ids": [int(t) for t in stop_ids], "max_context": int(max_context)}


def kv_layout(model: nn.Module) -> KVCacheLayout:
    """The cache layout of a supported causal LM; an unknown architecture is one line."""
    cfg, arch = model.config, type(model).__name__
    if arch not in SUPPORTED_ARCHITECTURES:
        raise InputError(f"KV-cache export: unknown architecture {arch} "
                         f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return KVCacheLayout(arch, cfg.num_hidden_layers, getattr(cfg, "num_key_value_heads", heads)
                         or heads, head_dim, cfg.vocab_size)


def _wrapper(model: nn.Module):
    from torch import nn
    from transformers.cache_utils import DynamicCache

    class KVDecoder(nn.Module):
        """(input_ids, attention_mask, position_ids, *flat past) -> (logits, *flat present)."""

        def __init__(self, lm: nn.Module):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.lm.config)
            for i in range(len(past) // 2):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, cache=cache, use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return KVDecoder(model).eval()


def export_kv_decoder(model: nn.Module, path: str | Path, opset: int = 17) -> KVCacheLayout:
    """Write the decoder graph with a KV cache to ``path`` (atomically); returns its layout.

    Traced with a past of 3 and 2 new tokens, so that no length is a trace-time constant of 0
    or 1; every batch and length axis is dynamic.
    """
    import warnings

    import torch

    from compress.common.files import atomic_write

    layout = kv_layout(model)
    past_len, new = 3, 2
    ids = torch.zeros(1, new, dtype=torch.long)
    mask = torch.ones(1, past_len + new, dtype=torch.long)
    pos = torch.arange(past_len, past_len + new)[None]
    past = [torch.zeros(1, layout.num_kv_heads, past_len, layout.head_dim)
            for _ in layout.past_names]
    axes = {"input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
    axes.update({n: {0: "batch", 2: "past"} for n in layout.past_names})
    axes.update({n: {0: "batch", 2: "total"} for n in layout.present_names})

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on the mask's Python branches
            torch.onnx.export(_wrapper(model), (ids, mask, pos, *past), str(tmp),
                              input_names=layout.input_names, output_names=layout.output_names,
                              dynamic_axes=axes, opset_version=opset, dynamo=False)

    atomic_write(path, write)
    return layout


def _session(path_or_session):
    if isinstance(path_or_session, (str, Path)):
        from compress.common.ort import make_session

        return make_session(path_or_session, threads=1)
    return path_or_session


def prefill_logits(path_or_session, layout: KVCacheLayout, ids: Sequence[int]) -> np.ndarray:
    """The logits [S, vocab] of one prompt run whole on an empty past."""
    sess = _session(path_or_session)
    n = len(ids)
    feeds = {"input_ids": np.asarray([list(ids)], np.int64),
             "attention_mask": np.ones((1, n), np.int64),
             "position_ids": np.arange(n, dtype=np.int64)[None]}
    feeds.update({name: np.zeros((1, layout.num_kv_heads, 0, layout.head_dim), np.float32)
                  for name in layout.past_names})
    return sess.run(["logits"], feeds)[0][0]


def greedy_onnx(path_or_session, layout: KVCacheLayout, prompt_ids: Sequence[int],
                steps: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decoding through the graph: prefill on a 0-length past, then ``steps`` - 1 decode
    steps. Returns the ``steps`` tokens and the logits each was chosen from."""
    sess = _session(path_or_session)
    past = [np.zeros((1, layout.num_kv_heads, 0, layout.head_dim), np.float32)
            for _ in layout.past_names]
    cur = np.asarray([list(prompt_ids)], np.int64)
    tokens, logits = [], []
    for _ in range(steps):
        p, n = past[0].shape[2], cur.shape[1]
        feeds = {"input_ids": cur, "attention_mask": np.ones((1, p + n), np.int64),
                 "position_ids": np.arange(p, p + n, dtype=np.int64)[None]}
        feeds.update(zip(layout.past_names, past, strict=True))
        out = sess.run(None, feeds)
        logits.append(out[0][0, -1])
        tokens.append(int(out[0][0, -1].argmax()))
        past, cur = out[1:], np.asarray([[tokens[-1]]], np.int64)
    return tokens, logits


@dataclass(frozen=True)
class KVParity:
    """The graph against torch on one prompt: prefill plus decode steps."""

    max_abs_logit_diff: float
    torch_tokens: list[int]
    onnx_tokens: list[int]

    @property
    def tokens_equal(self) -> bool:
        return self.torch_tokens == self.onnx_tokens


def kv_parity(path: str | Path, model: nn.Module, prompt_ids: Sequence[int],
              steps: int = 16) -> KVParity:
    """Prefill plus ``steps`` greedy decode steps in ORT and in torch (torch's own KV cache):
    the largest logit difference over every step, and both token lists."""
    import torch

    layout = kv_layout(model)
    onnx_tokens, onnx_logits = greedy_onnx(path, layout, prompt_ids, steps + 1)
    ids = torch.tensor([list(prompt_ids)])
    torch_tokens, diff, cache = [], 0.0, None
    with torch.no_grad():
        for step in range(steps + 1):
            out = model(input_ids=ids, cache=cache, use_cache=True)
            last = out.logits[0, -1]
            diff = max(diff, float(np.abs(last.numpy() - onnx_logits[step]).max()))
            torch_tokens.append(int(last.argmax()))
            # feed torch's own choice, so that a flipped token does not make every later step differ
            cache, ids = out.past_key_values, torch.tensor([[torch_tokens[-1]]])
    return KVParity(diff, torch_tokens, onnx_tokens)


def check_kv_parity(path: str | Path, model: nn.Module, prompt_ids: Sequence[int],
                    steps: int = 16, atol: float = 1e-3) -> KVParity:
    """``kv_parity``, raising StageError when the logits differ past ``atol`` or a greedy token
    differs."""
    parity = kv_parity(path, model, prompt_ids, steps)
    if not parity.max_abs_logit_diff <= atol or not parity.tokens_equal:
        raise StageError(f"{path}: KV-cache decoder differs from torch over prefill + {steps} "
                         f"steps: max |logit diff| {parity.max_abs_logit_diff:.3g} "
                         f"(allowed {atol:g}), greedy tokens equal: {parity.tokens_equal}")
    return parity
