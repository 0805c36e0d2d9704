"""A tiny random Llama and a word-level tokenizer with a chat template, built in memory (no
download): the causal-LM tests' teacher."""

from __future__ import annotations

import torch

WORDS = ("review sentiment the is was a film movie good bad great awful very not plot actors "
         "positive negative neutral so and of it this : . , ? ! N/A [MASK] user assistant system "
         "answer text").split()
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} : {{ m['content'] }} <|im_end|> "
    "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant : {% endif %}")


def tiny_tokenizer(chat: bool = True):
    """Words split on whitespace and punctuation; ``<s>`` first when special tokens are added."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + list(WORDS))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(seed: int = 0, vocab: int = len(SPECIAL) + len(WORDS)):
    """A 2-layer random LlamaForCausalLM (hidden 32, 4 heads, 2 KV heads), eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=False,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random init gives near-uniform outputs: widen them so labels differ
        model.lm_head.weight.mul_(20)
    return model
