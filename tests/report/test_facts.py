"""What the report states beside its numbers: the file to ship (report.md and report.html
headlines), the counts each caption and axis label stands on, and the token count of a sequence
model's p50. Reports are built from the records (conftest), as the benchmark writes them."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import build_report
from test_html import data_rows, parse

from compress.records import Bounds, Counts, Failure, RunReport, SearchRecord, TrialRecord
from compress.report.facts import p50_tokens, ship
from compress.report.html import write_html
from compress.report.plots import latency_xlabel, pareto_labels
from compress.report.render import render_markdown
from compress.report.search import search_labels, search_plot

SHIP = ("Ship: `quantize/model.onnx` (student-int8, the final model), packaged in `bundle/` "
        "(`bundle/model.onnx`).")


def test_the_headline_says_which_file_to_ship(report, run_dir):
    md = render_markdown(report).splitlines()
    assert md[2:5] == ["Status: **done**. Device: cpu. Final model: **student-int8**.", "",
                       f"**{SHIP}**"]
    page, text = parse(write_html(report, run_dir))
    assert ('<p id="ship"><b>Ship: <code>quantize/model.onnx</code> (student-int8, the final '
            "model), packaged in <code>bundle/</code> (<code>bundle/model.onnx</code>).</b></p>"
            ) in text


def test_without_a_package_stage_the_model_file_is_named_and_no_bundle(report):
    report.stages = [s for s in report.stages if s.kind != "package"]
    assert render_markdown(report).splitlines()[4] == (
        "**Ship: `quantize/model.onnx` (student-int8, the final model). No bundle: add a package "
        "stage, or run `compress deploy RUN_DIR --target TARGET`.**")


def test_a_failed_run_names_its_file_without_recommending_it(report):
    report.status = "failed"
    report.failure = Failure(reason="gate", message="gates.min_accuracy: 0.9667 < 0.99")
    assert render_markdown(report).splitlines()[4] == (
        "Final model file (the run failed: do not ship it before the failure below is fixed): "
        "`quantize/model.onnx` (student-int8, the final model), packaged in `bundle/` "
        "(`bundle/model.onnx`).")
    report.final = None
    assert ship(report) is None
    assert "Ship" not in render_markdown(report)


def test_captions_and_axis_labels_state_the_counts_plotted(report):
    md = render_markdown(report)
    assert ("## Models (ONNX Runtime CPU, 1 thread(s), batch as exported; quality on 360 test "
            "samples; latency over timed runs per model: teacher 200, student 2,760, "
            "student-pruned 3,680, student-int8 5,360)") in md
    assert "| p50 ms | p90 ms | runs | speedup vs teacher |" in md
    assert "| 0.0310 | 0.0326 | 5,360 | 26.77x |" in md
    assert pareto_labels(report.models) == (
        "latency p50 (ms, log scale; 200-5,360 runs per model)",
        "accuracy (360 test samples) - higher is better")
    one = report.models[:1]
    assert pareto_labels(one)[0] == "latency p50 (ms, log scale; 200 runs)"


def test_a_report_without_recorded_counts_says_the_split_only():
    """report.json of a real `compress pipeline` run from before the quality count was recorded."""
    old = RunReport.load(Path(__file__).parent / "data" / "mobile-report.json")
    assert pareto_labels(old.models)[1] == "accuracy (the test split) - higher is better"


def sequence_report(run_dir: Path) -> RunReport:
    """A run of sequence models: the benchmark times each at its ``seq_lens`` (128, then the
    test split's median, 23 tokens); the headline p50 is the first length's."""
    report = build_report(run_dir)
    for m in report.models:
        at_median = {k: round(v * 0.3, 5) for k, v in m.latency_ms.items()}
        m.task, m.latency_by_length = "sequence_classification", {
            "seq128": dict(m.latency_ms), "seq23": at_median}
    return report


def test_sequence_models_say_at_how_many_tokens_the_p50_was_measured(run_dir):
    report = sequence_report(run_dir)
    assert [p50_tokens(m) for m in report.models] == [128] * 4
    assert "| p50 ms at 128 tokens | p90 ms | runs |" in render_markdown(report)
    page, _ = parse(write_html(report, run_dir))
    assert page.tables["models"][0][8] == "th:p50 ms at 128 tokens"
    assert pareto_labels(report.models)[0] == (
        "latency p50 at 128 tokens (ms, log scale; 200-5,360 runs per model)")
    assert latency_xlabel(report.models) == (
        "latency per run at 128 tokens (ms, log scale); whiskers p1-p99")
    # the length is the one whose p50 is the headline, wherever it sits in the mapping
    m = report.models[0]
    m.latency_by_length = dict(reversed(list(m.latency_by_length.items())))
    assert p50_tokens(m) == 128
    assert p50_tokens(build_report(run_dir).models[0]) is None  # an image model has no tokens
    assert json.loads(m.model_dump_json())["latency_by_length"]["seq23"]["p50"] == 0.249
    assert data_rows(page, "models")[0][8] == "0.830"


def trial(number: int, state: str, feasible: bool, val: float | None, p50: float | None
          ) -> TrialRecord:
    return TrialRecord(
        number=number, params={"student.kwargs.width": 4 * (number + 1)},
        overrides=[f"student.kwargs.width={4 * (number + 1)}"], state=state, val_quality=val,
        teacher_val_quality=0.99, val_nll=None, p50_ms=p50, bytes=20_000 if p50 else None,
        speedup_vs_teacher=None, params_count=None, precision="fp32", seconds=30.0,
        feasible=feasible, constraints=None, probe=None, stopped=None,
        error=None if state == "complete" else "stage 01-distill: out of memory", retry_of=None,
        worker=None, run=f"search/trial-{number:04d}", stages_run=None)


def test_the_search_plot_says_how_many_trials_it_draws(tmp_path):
    trials = [trial(0, "complete", True, 0.985, 0.05), trial(1, "complete", False, 0.95, 0.03),
              trial(2, "fail", False, None, None)]
    s = SearchRecord(study="s", objective="latency", sampler="tpe",
                     constraints=Bounds(max_accuracy_drop=0.01), split="val",
                     teacher_val_quality=0.99,
                     counts=Counts(target=3, trials=3, complete=2, feasible=1, stopped_untrained=0,
                                   stopped_early=0, stopped_at_epochs=[], stopped_by_check=0,
                                   failed=1),
                     trials=trials, pareto=[1, 0], tie=0.0, chosen=0)
    plotted = [t for t in trials if t.state == "complete"]
    assert search_labels(s, plotted, "accuracy") == (
        "2 of 3 trials trained and measured (1 feasible)",
        "p50 ms on the target (each trial's own run)", "accuracy (val split)")
    assert search_plot(s, tmp_path / "search.png").read_bytes()[:4] == b"\x89PNG"
