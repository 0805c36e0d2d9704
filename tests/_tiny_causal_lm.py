"""A tiny random Llama saved as a Hugging Face directory with a real BPE tokenizer (trained in
memory on Python's own documentation, no download): the causal-lm pipeline's teacher."""

from __future__ import annotations

from pathlib import Path

VOCAB = 384


def bpe_tokenizer(vocab: int = VOCAB):
    """A byte-level BPE of ``vocab`` ids trained on pydoc sentences; ``</s>`` is id 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from compress.data.text import pydoc_sentences

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(pydoc_sentences()[:3000], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def tiny_causal_lm_dir(folder: Path, layers: int = 4, seed: int = 0) -> Path:
    """Write ``folder`` (config.json, weights, tokenizer): a LlamaForCausalLM of ``layers``
    blocks, hidden 32, tied embeddings; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bpe_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)
