"""Latency first: each candidate is built and exported untrained and timed on the target; one that
cannot meet the latency or size constraint is never trained (read back from the study's records)."""

from __future__ import annotations

import json

import optuna
import pytest
from click.testing import CliRunner

from compress.cli import cli
from compress.search.loop import default_storage


def _search(path, out):
    return CliRunner().invoke(cli, ["search", str(path), "--out", str(out), "-q"])


def _trials(out) -> dict[int, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="tiny-search", storage=default_storage(out))
    return {t.number: t for t in study.get_trials()}


def test_a_candidate_slower_than_the_constraint_is_never_trained(make_search, tmp_path):
    # 0.1 microseconds: more than ten times under ONNX Runtime's own per-call floor on any CPU
    path = make_search({"space": {"student.kwargs.width": [2, 4]}, "sampler": "grid", "trials": 2,
                        "constraints": {"max_latency_ms": 0.0001}})
    out = tmp_path / "run"
    res = _search(path, out)
    assert res.exit_code == 3, res.output
    assert res.output == ("error: search: none of 2 trials met the constraints on validation "
                          f"(0 trained, 2 stopped, 0 failed); see {out / 'report.json'}\n")
    report = json.loads((out / "report.json").read_text())  # a report, though nothing was chosen
    assert report["status"] == "failed" and report["models"] == [] and report["final"] is None
    assert report["failure"]["reason"] == "gate"
    assert [t["state"] for t in report["search"]["trials"]] == ["pruned", "pruned"]
    trials = _trials(out)
    assert len(trials) == 2
    for t in trials.values():
        assert t.state == optuna.trial.TrialState.PRUNED
        stopped, probe = t.user_attrs["stopped"], t.user_attrs["probe"]
        assert stopped["at"] == "probe" and probe["p50_ms"] > 0.0001
        assert t.user_attrs["result"] is None and t.intermediate_values == {}
        folder = out / "search" / f"trial-{t.number:04d}"
        assert not (folder / "01-distill").exists()  # never trained
        history = json.loads((folder / "probe" / "01-distill" / "stage.json").read_text())
        assert history["metrics"]["history"] == [] and history["config"]["epochs"] == 0
    record = json.loads((out / "search" / "search.json").read_text())
    assert record["counts"]["stopped_untrained"] == 2 and record["chosen"] is None
    # the teacher was trained once, by the first trial's probe, and fetched by the second
    assert sorted(p.name for p in (out / "search" / "store").iterdir())[:1] != []


@pytest.mark.slow
def test_a_candidate_over_max_bytes_is_never_trained_and_the_other_is_chosen(make_search, tmp_path):
    # file sizes do not depend on the CPU: width 16 is ~90 kB of fp32 weights, width 2 ~5 kB
    path = make_search({"space": {"student.kwargs.width": [16, 2]}, "sampler": "grid", "trials": 2,
                        "constraints": {"max_bytes": 40_000, "max_accuracy_drop": 1.0}})
    out = tmp_path / "run"
    res = _search(path, out)
    assert res.exit_code == 0, res.output
    by_width = {t.params["student.kwargs.width"]: t for t in _trials(out).values()}
    big, small = by_width[16], by_width[2]
    assert big.state == optuna.trial.TrialState.PRUNED and big.user_attrs["probe"]["bytes"] > 40_000
    assert not (out / "search" / f"trial-{big.number:04d}" / "01-distill").exists()
    assert small.state == optuna.trial.TrialState.COMPLETE
    assert small.user_attrs["probe"]["bytes"] <= 40_000
    assert "01-distill" in small.user_attrs["result"]["ran"]
    report = json.loads((out / "report.json").read_text())
    assert report["search"]["chosen"] == small.number
    final = next(m for m in report["models"] if m["name"] == report["final"])
    assert final["split"] == "test" and final["bytes"] <= 40_000
    teacher = next(m for m in report["models"] if m["name"] == "teacher")
    assert teacher["split"] == "test"
    # the chosen run fetched every trained stage from the store: only the benchmark ran again
    ran = [s["dir"] for s in report["stages"] if s["status"] == "done"]
    assert ran == ["03-benchmark"]
    html = (out / "report.html").read_text()
    assert 'id="search-front"' in html and "search trials" in html


def test_a_candidate_slower_than_the_best_feasible_trial_side_by_side_is_never_trained(
        make_search, tmp_path):
    # width 2 is trained first and meets the (lax) bar; width 32 has ~250x its MACs, so timed
    # beside it in one session it is far more than 1.5x slower on any CPU
    # (Optuna's grid sampler visits [2, 32] in that order with seed 1)
    path = make_search({"space": {"student.kwargs.width": [2, 32]}, "sampler": "grid", "trials": 2,
                        "seed": 1, "constraints": {"max_accuracy_drop": 1.0}, "front_slack": 0.5})
    out = tmp_path / "run"
    res = _search(path, out)
    assert res.exit_code == 0, res.output
    by_width = {t.params["student.kwargs.width"]: t for t in _trials(out).values()}
    small, big = by_width[2], by_width[32]
    assert (small.number, big.number) == (0, 1)
    assert small.state == optuna.trial.TrialState.COMPLETE and small.user_attrs["probe"] is None
    assert big.state == optuna.trial.TrialState.PRUNED
    probe = big.user_attrs["probe"]
    assert probe["rival"] == small.number and probe["ratio"] > 1.5
    assert probe["ratio"] == pytest.approx(probe["p50_ms"] / probe["rival_p50_ms"], rel=1e-3)
    assert big.user_attrs["stopped"]["reason"].startswith(
        f"untrained p50 {probe['p50_ms']:.4f} ms is {probe['ratio']:.2f}x best feasible trial "
        f"{small.number}'s {probe['rival_p50_ms']:.4f} ms timed beside it (> 1.5x)")
    folder = out / "search" / f"trial-{big.number:04d}"
    assert not (folder / "01-distill").exists()
    assert (folder / "probe" / "rival" / "model.onnx").is_file()


def test_a_prune_budget_out_of_reach_stops_the_trial_and_the_search_goes_on(make_search, tmp_path):
    # 5% of a 4-channel student's MACs cannot be reached within max_ratio 0.8: a dead end of the
    # space, stopped (so it counts and the sampler learns from it), not failed
    stages = [{"distill": {"epochs": 2, "lr": 0.01}}, {"prune": {"macs": 1.0, "epochs": 0}},
              {"export": {"opset": 18}}, {"benchmark": {}}]
    path = make_search({"space": {"stages.1.prune.macs": [0.05, 1.0]}, "sampler": "grid",
                        "trials": 2, "constraints": {"max_accuracy_drop": 1.0}}, stages=stages)
    out = tmp_path / "run"
    res = _search(path, out)
    assert res.exit_code == 0, res.output
    by_macs = {t.params["stages.1.prune.macs"]: t for t in _trials(out).values()}
    dead, kept = by_macs[0.05], by_macs[1.0]
    assert dead.state == optuna.trial.TrialState.PRUNED
    assert dead.user_attrs["stopped"]["at"] == "check"
    assert dead.user_attrs["stopped"]["reason"].startswith(
        "stages[1].prune.macs: budget ") and "not reachable within max_ratio 0.8" in \
        dead.user_attrs["stopped"]["reason"]
    assert kept.state == optuna.trial.TrialState.COMPLETE
    record = json.loads((out / "search" / "search.json").read_text())
    assert record["counts"]["stopped_by_check"] == 1 and record["counts"]["failed"] == 0
    assert record["chosen"] == kept.number
    assert record["trials"][kept.number]["val_nll"] > 0
