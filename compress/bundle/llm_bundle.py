"""A causal-LM bundle: one KV-cache decoder graph, its tokenizer, and a torch-free runner that
generates with onnxruntime and tokenizers alone (``bundle/llm_runner.py``, shipped as
``runner.py``)::

    BUNDLE/decoder.onnx     the decoder with past_key_values inputs and present outputs
    BUNDLE/tokenizer.json   the teacher's tokenizer (the student shares it)
    BUNDLE/runner.py        python runner.py BUNDLE --prompt "..." | --bench
    BUNDLE/manifest.json    {"llm": {"model", "tokenizer", "kv_cache": {layout, stop_ids,
                            max_context, ...}}, precision, quality, latency, sha256 of each file}

The folder is written aside and swapped in whole. After writing, the bundle's own runner
generates greedily from a test prompt and its tokens are compared with the decoder graph's
(``compress.export.kv_cache.greedy_onnx``) in the report.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.bundle.writer import staged_folder
from compress.common.files import sha256_file, write_json
from compress.export.kv_cache import KVCacheLayout, greedy_onnx
from compress.records.measurement import ModelMeasurement

RUNNER = Path(__file__).resolve().with_name("llm_runner.py")
MODEL, TOKENIZER = "decoder.onnx", "tokenizer.json"


@dataclass(frozen=True)
class LLMBundleSpec:
    """What the bundle says besides its files: the layout, what was measured, where from."""

    kv_cache: dict[str, Any]  # KVCacheLayout.manifest(stop_ids, max_context)
    precision: str
    measured: ModelMeasurement | None
    config_sha256: str


@dataclass
class LLMBundle:
    folder: Path
    manifest: dict[str, Any]
    runner_tokens: list[int]
    graph_tokens: list[int]

    @property
    def tokens_equal(self) -> bool:
        return self.runner_tokens == self.graph_tokens[: len(self.runner_tokens)]

    def sizes(self) -> dict[str, int]:
        return {name: f["bytes"] for name, f in self.manifest["files"].items()}


def _measured(m: ModelMeasurement | None) -> dict[str, Any]:
    if m is None:
        return {"quality": {}, "latency": {"where": "not measured (no benchmark stage before "
                                                    "package)"}}
    return {"quality": {"metric": m.metric, "value": m.accuracy, "split": m.split,
                        "metrics": dict(m.quality)},
            "latency": {"threads": m.threads, "clock": m.clock, "ttft_ms": m.ttft_ms,
                        "decode_tokens_per_s": m.decode_tokens_per_s,
                        "where": "measured where the pipeline ran"}}


def write_llm_bundle(model: Path, tokenizer: Path, out_dir: Path, spec: LLMBundleSpec,
                     check_prompt: list[int], check_tokens: int = 16) -> LLMBundle:
    """Write the bundle to ``out_dir`` and run its runner once on ``check_prompt``."""
    from compress.bundle.llm_runner import load_bundle

    with staged_folder(out_dir) as tmp:
        shutil.copyfile(model, tmp / MODEL)
        shutil.copyfile(tokenizer, tmp / TOKENIZER)
        shutil.copyfile(RUNNER, tmp / "runner.py")
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"task": "causal-lm", "precision": spec.precision,
                    "llm": {"model": MODEL, "tokenizer": TOKENIZER, "kv_cache": spec.kv_cache},
                    **_measured(spec.measured), "config_sha256": spec.config_sha256,
                    "files": files,
                    "run": "python runner.py . --prompt 'Once upon a time' (greedy), --bench"}
        write_json(tmp / "manifest.json", manifest)
    runner, _ = load_bundle(out_dir)
    layout = KVCacheLayout.from_manifest(spec.kv_cache)
    got = runner.generate(check_prompt, check_tokens)
    want = greedy_onnx(out_dir / MODEL, layout, check_prompt, check_tokens)[0]
    return LLMBundle(out_dir, manifest, got, want)
