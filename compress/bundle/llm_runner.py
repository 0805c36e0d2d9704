"""Generate text with a causal-LM bundle on any box with ONNX Runtime: no torch, no compress.

    python llm_runner.py BUNDLE --prompt "Once upon a time"      greedy continuation
    python llm_runner.py BUNDLE --prompt "..." --temperature 0.8 --top-k 40 --seed 1
    python llm_runner.py BUNDLE --bench [--context 128]          time to first token, tokens/s

Needs numpy, onnxruntime and tokenizers. ``BUNDLE/manifest.json`` holds an ``llm`` section::

    {"llm": {"model": "decoder.onnx", "tokenizer": "tokenizer.json",
             "kv_cache": {"num_layers": 30, "num_kv_heads": 3, "head_dim": 64,
                          "vocab_size": 49152, "past": "past_key_values.{i}.{kind}",
                          "present": "present.{i}.{kind}", "past_axis": 2,
                          "position_ids": true, "dtype": "float32",
                          "stop_ids": [2], "max_context": 2048}}}

``kv_cache`` is what ``compress.export.kv_cache.KVCacheLayout.manifest`` writes. The model is one
decoder graph: the prefill runs the whole prompt on a past of length 0, each decode step one token
on the previous step's ``present`` tensors. A refusal (a missing file or key, a prompt longer than
``max_context``) prints one line starting with ``error:`` and exits 2.

Public API::

    LLMRunner(model_path, kv_cache, threads=1)
    LLMRunner.generate(prompt_ids, max_new_tokens, temperature=0.0, top_k=0, seed=0) -> list[int]
    LLMRunner.bench(context=128, new_tokens=32) -> {"ttft_ms", "decode_tokens_per_s", ...}
    load_bundle(bundle, threads=1) -> (LLMRunner, tokenizer)
    main(argv=None) -> int
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

KV_KEYS = ("num_layers", "num_kv_heads", "head_dim", "vocab_size", "past", "present",
           "past_axis", "position_ids", "dtype", "stop_ids", "max_context")


class RunnerError(Exception):
    """The bundle or an argument cannot be used; printed as one line, exit 2."""


def _session(path: Path, threads: int):
    # a standalone copy of compress/common/ort.py's CPU session options
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class LLMRunner:
    """A KV-cache decoder graph and the loop that generates with it."""

    def __init__(self, model_path: str | Path, kv_cache: dict, threads: int = 1):
        missing = [k for k in KV_KEYS if k not in kv_cache]
        if missing:
            raise RunnerError(f"manifest llm.kv_cache: missing {', '.join(missing)}")
        self.kv = kv_cache
        self.sess = _session(Path(model_path), threads)
        n = kv_cache["num_layers"]
        self.past_names = [kv_cache["past"].format(i=i, kind=k) for i in range(n)
                           for k in ("key", "value")]
        self.stop_ids = set(kv_cache["stop_ids"])

    def _empty_past(self) -> list[np.ndarray]:
        shape = [1, self.kv["num_kv_heads"], self.kv["head_dim"]]
        shape.insert(self.kv["past_axis"], 0)
        return [np.zeros(shape, np.dtype(self.kv["dtype"])) for _ in self.past_names]

    def _step(self, ids: np.ndarray, past: list[np.ndarray]):
        p, n = past[0].shape[self.kv["past_axis"]], ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, p + n), np.int64)}
        if self.kv["position_ids"]:
            feeds["position_ids"] = np.arange(p, p + n, dtype=np.int64)[None]
        feeds.update(zip(self.past_names, past, strict=True))
        out = self.sess.run(None, feeds)
        return out[0][0, -1], out[1:]

    def _check_length(self, prompt_len: int, new_tokens: int) -> None:
        limit = self.kv["max_context"]
        if prompt_len + new_tokens > limit:
            raise RunnerError(f"--prompt: {prompt_len} tokens plus {new_tokens} new ones exceed "
                              f"the exported context of {limit} tokens")

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int = 0, seed: int = 0) -> list[int]:
        """The new token ids, stopping after a stop id or ``max_new_tokens``. Temperature 0 is
        greedy; otherwise sampling from the top ``top_k`` (0: all) at that temperature."""
        self._check_length(len(prompt_ids), max_new_tokens)
        rng = np.random.default_rng(seed)
        ids, past, out = np.asarray([list(prompt_ids)], np.int64), self._empty_past(), []
        for _ in range(max_new_tokens):
            logits, past = self._step(ids, past)
            out.append(_pick(logits, temperature, top_k, rng))
            if out[-1] in self.stop_ids:
                break
            ids = np.asarray([[out[-1]]], np.int64)
        return out

    def bench(self, context: int = 128, new_tokens: int = 32, seed: int = 0) -> dict:
        """Time to first token on a ``context``-token prompt of random ids, then decode tokens/s
        over ``new_tokens`` steps (greedy, stop ids ignored)."""
        self._check_length(context, new_tokens)
        rng = np.random.default_rng(seed)
        ids = rng.integers(3, self.kv["vocab_size"], size=(1, context), dtype=np.int64)
        t0 = time.perf_counter()
        logits, past = self._step(ids, self._empty_past())
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            logits, past = self._step(np.asarray([[int(logits.argmax())]], np.int64), past)
        decode = time.perf_counter() - t0
        return {"context": context, "new_tokens": new_tokens, "ttft_ms": 1000 * ttft,
                "decode_tokens_per_s": new_tokens / decode}


def _pick(logits: np.ndarray, temperature: float, top_k: int, rng) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < z.size:
        z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
    p = np.exp(z - z.max())
    return int(rng.choice(z.size, p=p / p.sum()))


def load_bundle(bundle: str | Path, threads: int = 1):
    """The runner and the tokenizer of ``BUNDLE/manifest.json``'s ``llm`` section."""
    bundle = Path(bundle)
    try:
        llm = json.loads((bundle / "manifest.json").read_text())["llm"]
        model, tok, kv = llm["model"], llm["tokenizer"], llm["kv_cache"]
    except FileNotFoundError:
        raise RunnerError(f"{bundle}: no manifest.json") from None
    except (KeyError, TypeError) as e:
        raise RunnerError(f"{bundle / 'manifest.json'}: missing key llm.{e.args[0]}") from None
    for name in (model, tok):
        if not (bundle / name).is_file():
            raise RunnerError(f"{bundle}: {name} named in manifest.json is missing")
    from tokenizers import Tokenizer

    return LLMRunner(bundle / model, kv, threads), Tokenizer.from_file(str(bundle / tok))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="llm_runner.py", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--prompt", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bench", action="store_true", help="print time to first token and tokens/s")
    p.add_argument("--context", type=int, default=128, help="prompt length for --bench")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.prompt is None and not args.bench:
            raise RunnerError("give --prompt TEXT or --bench")
        runner, tokenizer = load_bundle(args.bundle, args.threads)
        if args.prompt is not None:
            ids = tokenizer.encode(args.prompt).ids
            new = runner.generate(ids, args.max_new_tokens, args.temperature, args.top_k,
                                  args.seed)
            print(tokenizer.decode([t for t in new if t not in runner.stop_ids]))
        if args.bench:
            print(json.dumps(runner.bench(args.context, args.max_new_tokens)))
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
