"""The constraint logic of a search, on a real Optuna study: an infeasible trial is never chosen,
however fast; the front holds only trials nothing beats on both axes; the early-stop bar comes from
the finished trials' own learning curves."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from compress.config.search import SearchConfig
from compress.records import TrialResult
from compress.search.records import choose, pareto, summary
from compress.search.study import cannot_reach, constraint_values, needed_quality

SEARCH = SearchConfig.model_validate({
    "space": {"student.kwargs.width": [2, 4, 6, 8]},
    "constraints": {"max_accuracy_drop": 0.01, "max_bytes": 50_000}})
TEACHER = 0.99


def _result(quality: float, p50: float, nbytes: int, feasible: bool, n: int = 0) -> TrialResult:
    """A measured trial's result, typed as the search stores it."""
    return TrialResult(val_quality=quality, teacher_val_quality=TEACHER, p50_ms=p50,
                       teacher_p50_ms=0.5, speedup_vs_teacher=round(0.5 / p50, 3), bytes=nbytes,
                       params_count=nbytes // 4, macs=1000, precision="fp32", final="student",
                       final_path=f"trial-{n}/model.onnx", teacher_path="trial-0/model.onnx",
                       feasible=feasible, ran=["01-distill"])


def _trial(width: int, quality: float, p50: float, nbytes: int, curve: list[float] | None = None,
           schedule: int | None = None):
    cons = constraint_values(SEARCH, quality, TEACHER, p50, nbytes, higher=True)
    result = _result(quality, p50, nbytes, all(v <= 0 for v in cons.values()))
    return create_trial(
        state=TrialState.COMPLETE, value=p50, params={"student.kwargs.width": width},
        distributions={"student.kwargs.width": CategoricalDistribution([2, 4, 6, 8])},
        intermediate_values=dict(enumerate(curve or [], start=1)),
        user_attrs={"constraints": cons, "schedule": schedule, "result": result.as_dict()})


def _study(*trials):
    study = optuna.create_study(direction="minimize")
    for t in trials:
        study.add_trial(t)
    study.set_user_attr("teacher_val", TEACHER)
    return study


def test_constraint_values_say_how_far_each_bound_is():
    cons = constraint_values(SEARCH, 0.975, TEACHER, 0.03, 60_000, higher=True)
    assert cons == {"max_accuracy_drop": pytest.approx(0.005), "max_bytes": 10_000.0}
    met = constraint_values(SEARCH, 0.985, TEACHER, 0.03, 40_000, higher=True)
    assert met["max_accuracy_drop"] == pytest.approx(-0.005) and met["max_bytes"] == -10_000.0
    # a trial stopped before it was measured meets nothing
    assert min(constraint_values(SEARCH, None, TEACHER, None, None, True).values()) >= 1e6


def test_an_infeasible_trial_is_never_chosen_however_fast():
    study = _study(
        _trial(2, 0.950, 0.010, 10_000),   # fastest, 4 points below the teacher
        _trial(4, 0.985, 0.020, 20_000),   # feasible
        _trial(6, 0.986, 0.030, 30_000),   # feasible, slower and only a little better
        _trial(8, 0.995, 0.015, 90_000),   # fast and accurate, but too big
    )
    s = summary(study, SEARCH, total=4)
    assert s.chosen == 1
    assert [t.feasible for t in s.trials] == [False, True, True, False]
    assert s.pareto == [1, 2]  # feasible trials only, by p50
    assert s.counts.feasible == 2 and s.counts.complete == 4
    # the model's parameter count is params_count in the record as in the stored result
    assert [t.params_count for t in s.trials] == [2500, 5000, 7500, 22500]
    assert s.trials[0].params == {"student.kwargs.width": 2}


def test_no_feasible_trial_chooses_nothing():
    records = summary(_study(_trial(2, 0.95, 0.01, 10_000), _trial(8, 0.99, 0.02, 90_000)),
                      SEARCH, total=2).trials
    assert choose(records, "latency") is None
    assert pareto(records, "latency") == [0, 1]  # the front of what was measured


def test_size_objective_picks_the_smallest_feasible():
    records = summary(_study(_trial(4, 0.985, 0.020, 30_000), _trial(6, 0.986, 0.030, 20_000)),
                      SEARCH, total=2).trials
    assert choose(records, "latency") == 0
    assert choose(records, "size") == 1


def test_the_early_stop_bar_comes_from_finished_curves_of_the_same_schedule():
    need = needed_quality(SEARCH, TEACHER, higher=True)
    assert need == pytest.approx(0.98)
    # a finished 7-epoch trial gained 0.10 after epoch 3 (0.88 -> 0.98) and 0.02 after epoch 6
    study = _study(_trial(4, 0.985, 0.02, 20_000, curve=[0.5, 0.8, 0.88, 0.93, 0.95, 0.96, 0.98],
                          schedule=7))
    study.set_user_attr("needed_quality", need)
    assert cannot_reach(study, 2, 0.10, 3, schedule=7) is None         # before the warm-up: never
    assert cannot_reach(study, 3, 0.87, 3, schedule=7) is not None     # 0.87 + 0.10 < 0.98
    assert cannot_reach(study, 3, 0.89, 3, schedule=7) is None         # 0.89 + 0.10 >= 0.98
    assert cannot_reach(study, 6, 0.95, 3, schedule=7) == pytest.approx(0.96)  # 0.98 - 0.02
    assert cannot_reach(study, 9, 0.10, 3, schedule=7) is None         # no finished curve that long
    # a 30-epoch schedule is not judged by a 7-epoch trial's curve, however far behind it is
    assert cannot_reach(study, 3, 0.10, 3, schedule=30) is None


def test_the_choice_reads_the_side_by_side_final_round():
    # trial 0 looked faster when it finished (0.020 ms against 0.025), but timed beside trial 1 in
    # one session it is the slower of the two: the round decides, and the front follows it
    study = _study(_trial(4, 0.985, 0.020, 20_000), _trial(6, 0.986, 0.025, 30_000))
    plain = summary(study, SEARCH, total=2)
    assert plain.chosen == 0 and plain.trials[0].final_round is None
    rounds = {0: {"p50_ms": 0.031, "speedup_vs_teacher": 30.0},
              1: {"p50_ms": 0.027, "speedup_vs_teacher": 34.4}}
    s = summary(study, SEARCH, total=2, final_round=rounds)
    assert s.chosen == 1 and s.pareto == [1]
    assert s.trials[1].final_round.as_dict() == rounds[1]
    assert s.trials[0].p50_ms == 0.020  # the trial's own figure stays on record


def test_a_trial_with_the_distill_of_a_stopped_trial_is_stopped_at_once():
    from types import SimpleNamespace

    from compress.search.study import _same_distill_stopped, distill_key

    raw = {"student": {"kwargs": {"width": 4}}, "stages": [{"distill": {"epochs": 15}},
                                                          {"prune": {"macs": 0.5}}]}
    later_only = {**raw, "stages": [raw["stages"][0], {"prune": {"macs": 0.7}}]}
    other = {**raw, "stages": [{"distill": {"epochs": 30}}, raw["stages"][1]]}
    assert distill_key(raw) == distill_key(later_only) != distill_key(other)
    assert distill_key({"stages": [{"export": {}}]}) is None
    stopped = {"at": "epoch", "epoch": 8, "quality": 0.86, "needed": 0.89,
               "reason": "stopped at epoch 8: best validation quality 0.8600, cannot reach 0.8900"}
    study = _study()
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={
        "distill_key": distill_key(raw), "stopped": stopped}))
    ctx = SimpleNamespace(search=SEARCH, higher=True)
    fresh = study.ask()
    fresh.set_user_attr("distill_key", distill_key(other))
    _same_distill_stopped(fresh, ctx, 0.0)  # another distill: goes on
    same = study.ask()
    same.set_user_attr("distill_key", distill_key(later_only))
    with pytest.raises(optuna.TrialPruned):
        _same_distill_stopped(same, ctx, 0.0)
    rec = study.trials[-1].user_attrs["stopped"]
    assert rec["same_as"] == 0 and rec["epoch"] == 8
    assert rec["reason"] == ("same distill as trial 0, which stopped at epoch 8: best validation "
                             "quality 0.8600, cannot reach 0.8900")


def test_trials_tied_on_speed_are_decided_by_validation_quality():
    # 0.0200 and 0.0208 ms are 4% apart: within the default 5% tie, so the more accurate one wins;
    # 0.0230 is 15% slower and is not tied, however accurate
    study = _study(_trial(4, 0.980, 0.0200, 20_000), _trial(6, 0.986, 0.0208, 30_000),
                   _trial(8, 0.990, 0.0230, 40_000))
    assert summary(study, SEARCH, total=3).chosen == 1
    records = summary(study, SEARCH, total=3).trials
    assert choose(records, "latency", tie=0.0) == 0
    assert choose(records, "latency", tie=0.2) == 2


def test_equal_speed_and_accuracy_are_decided_by_validation_loss():
    # 360 validation images make accuracy a count: two trials often tie on it, their loss does not
    records = summary(_study(_trial(4, 0.986, 0.0200, 20_000), _trial(6, 0.986, 0.0205, 30_000)),
                      SEARCH, total=2).trials
    records[0].val_nll, records[1].val_nll = 0.081, 0.052
    assert choose(records, "latency", tie=0.05) == 1
    assert choose(records, "latency", tie=0.0) == 0  # not tied on speed: the faster one
    records[1].val_nll = None  # no loss measured: the faster one
    assert choose(records, "latency", tie=0.05) == 0


def test_no_final_round_when_the_space_changes_inputs_or_timing(tmp_path):
    from types import SimpleNamespace

    from compress.search.study import final_round

    study = _study()
    for n in range(2):
        (tmp_path / f"trial-{n}").mkdir()
        (tmp_path / f"trial-{n}" / "model.onnx").write_bytes(bytes([n]) * 8)
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.02, user_attrs={
            "result": _result(0.99, 0.02, 8, True, n).as_dict()}))
    for key in ("data.image_size", "target.threads"):
        search = SearchConfig.model_validate({"space": {key: [1, 2]}})
        # a ctx with no pipeline: reaching the timing would fail, so {} proves the round is skipped
        assert final_round(study, SimpleNamespace(search=search, search_dir=tmp_path)) == {}


def test_the_probe_trains_what_the_tie_could_still_choose():
    # a candidate 20% slower than the best feasible trial may win a 30% tie on quality: train it
    def slack(**kw):
        return SearchConfig.model_validate({"space": {"student.kwargs.width": [2, 4]}, **kw}).probe_slack

    assert slack() == 0.1
    assert slack(tie=0.3) == 0.3
    assert slack(tie=0.3, front_slack=0.5) == 0.5
    assert slack(tie=0.3, front_slack=None) is None
