"""The torch-free generate loop of a causal-LM bundle against transformers' generate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests._tiny_llama import tiny_llama
from tests.bundle.conftest import GUARD, ROOT

LLM_RUNNER = ROOT / "compress" / "bundle" / "llm_runner.py"
PROMPT = [5, 17, 33, 8, 9, 60, 41]


def _word_tokenizer(path, vocab: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {f"w{i}": i for i in range(vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from compress.export.kv_cache import export_kv_decoder

    model = tiny_llama(init=0.5)
    root = tmp_path_factory.mktemp("llm_bundle")
    layout = export_kv_decoder(model, root / "decoder.onnx")
    _word_tokenizer(root / "tokenizer.json", layout.vocab_size)
    manifest = {"llm": {"model": "decoder.onnx", "tokenizer": "tokenizer.json",
                        "kv_cache": layout.manifest(stop_ids=[2], max_context=64)}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return model, root


def _hf_greedy(model, prompt, n):
    import torch

    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                         do_sample=False, eos_token_id=2, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_tokens_equal_transformers_generate(bundle):
    from compress.bundle.llm_runner import load_bundle

    model, root = bundle
    runner, _ = load_bundle(root)
    for prompt in (PROMPT, [3, 4], [90, 12, 12, 7, 66]):
        expected = _hf_greedy(model, prompt, 20)
        assert runner.generate(prompt, 20) == expected
    assert len(set(_hf_greedy(model, PROMPT, 20))) > 3


def test_sampling_is_seeded_and_stays_in_top_k(bundle):
    from compress.bundle.llm_runner import load_bundle

    runner, _ = load_bundle(bundle[1])
    a = runner.generate(PROMPT, 12, temperature=1.0, top_k=5, seed=7)
    assert a == runner.generate(PROMPT, 12, temperature=1.0, top_k=5, seed=7)
    assert runner.generate(PROMPT, 12, temperature=1.0, top_k=1, seed=3) == \
        runner.generate(PROMPT, 12)  # top-1 sampling is greedy


def _run(*args):
    code = GUARD + f"import runpy, sys; sys.argv = {['llm_runner.py', *args]!r}; " \
        f"runpy.run_path({str(LLM_RUNNER)!r}, run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_cli_prompt_and_bench_without_torch(bundle):
    model, root = bundle
    prompt = " ".join(f"w{i}" for i in PROMPT)
    r = _run(str(root), "--prompt", prompt, "--max-new-tokens", "8")
    assert r.returncode == 0, r.stderr
    expected = [t for t in _hf_greedy(model, PROMPT, 8) if t != 2]
    assert r.stdout.split() == [f"w{i}" for i in expected]
    r = _run(str(root), "--bench", "--context", "16", "--max-new-tokens", "8")
    assert r.returncode == 0, r.stderr
    bench = json.loads(r.stdout)
    assert bench["context"] == 16 and bench["new_tokens"] == 8
    assert bench["decode_tokens_per_s"] > 0 and bench["ttft_ms"] > 0


def test_cli_refusals_are_one_line(bundle, tmp_path):
    _, root = bundle
    r = _run(str(root), "--prompt", " ".join(["w5"] * 60), "--max-new-tokens", "8")
    assert (r.returncode, r.stderr) == (2, "error: --prompt: 60 tokens plus 8 new ones exceed "
                                           "the exported context of 64 tokens\n")
    (tmp_path / "manifest.json").write_text((root / "manifest.json").read_text())
    (tmp_path / "decoder.onnx").write_bytes((root / "decoder.onnx").read_bytes())
    r = _run(str(tmp_path), "--prompt", "w1")
    assert (r.returncode, r.stderr) == (2, f"error: {tmp_path}: tokenizer.json named in "
                                           f"manifest.json is missing\n")
