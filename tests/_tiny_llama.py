"""A tiny random Llama (no download) for the causal-LM student tests, and a tokenizer for it."""

from __future__ import annotations


def tiny_llama(layers: int = 3, vocab: int = 97, seed: int = 0, init: float = 0.2,
               hidden: int = 32, heads: int = 4, kv_heads: int = 2):
    """A LlamaForCausalLM of a few thousand parameters, with weights large enough that greedy
    decoding does not repeat one token. ``heads`` query heads share ``kv_heads`` KV heads (head
    size ``hidden / heads``); the MLP is 64 wide."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=64,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads,
                      max_position_embeddings=256, tie_word_embeddings=True,
                      initializer_range=init, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()
