"""Confirming the choice at more seeds: a candidate that meets the budget at the run's seed and
misses it at another is never chosen; the choice is the fastest whose worst seed holds; the
checks are real runs at the other seed, measured on that seed's own validation split."""

from __future__ import annotations

import optuna
import pytest
from _util import ROOT
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from compress.config.search import SearchConfig
from compress.records import SeedCheck, TrialResult
from compress.search.confirm import holds, preference, seed_checks
from compress.search.loop import _least_worst, no_choice_message
from compress.search.records import summary
from compress.search.study import constraint_values

SEARCH = SearchConfig.model_validate({
    "space": {"student.kwargs.width": [2, 4, 6, 8]},
    "constraints": {"max_accuracy_drop": 0.01}, "tie": 0.0})
TEACHER = 0.99


def _trial(width: int, quality: float, p50: float):
    cons = constraint_values(SEARCH, quality, TEACHER, p50, 1000, higher=True)
    result = TrialResult(val_quality=quality, teacher_val_quality=TEACHER, p50_ms=p50,
                         teacher_p50_ms=0.5, speedup_vs_teacher=round(0.5 / p50, 3), bytes=1000,
                         params_count=250, macs=1000, precision="fp32", final="student",
                         final_path="m.onnx", teacher_path="t.onnx",
                         feasible=all(v <= 0 for v in cons.values()), ran=[])
    return create_trial(
        state=TrialState.COMPLETE, value=p50, params={"student.kwargs.width": width},
        distributions={"student.kwargs.width": CategoricalDistribution([2, 4, 6, 8])},
        user_attrs={"constraints": cons, "result": result.as_dict(),
                    "overrides": [f"student.kwargs.width={width}"]})


def _check(seed: int, quality: float, teacher: float) -> dict:
    cons = constraint_values(SEARCH, quality, teacher, None, None, higher=True)
    return SeedCheck(seed=seed, val_quality=quality, teacher_val_quality=teacher,
                     feasible=all(v <= 0 for v in cons.values()), constraints=cons, seconds=1.0,
                     run="trial-0000/seed-1").as_dict()


def _study():
    study = optuna.create_study(direction="minimize")
    for t in (_trial(2, 0.985, 0.010),   # fastest: holds at seed 0 only
              _trial(4, 0.990, 0.012),   # holds at every seed
              _trial(6, 0.995, 0.020),   # holds too, but slower
              _trial(8, 0.950, 0.005)):  # fastest of all, infeasible at seed 0
        study.add_trial(t)
    study.set_user_attr("seed_check:0:1", _check(1, 0.965, 0.990))  # 2.5 points below at seed 1
    study.set_user_attr("seed_check:0:2", _check(2, 0.984, 0.991))
    study.set_user_attr("seed_check:1:1", _check(1, 0.983, 0.990))
    study.set_user_attr("seed_check:1:2", _check(2, 0.989, 0.994))
    return study


def test_the_fastest_candidate_whose_worst_seed_holds_is_chosen():
    study = _study()
    one_seed = summary(study, SEARCH, total=4)
    assert one_seed.chosen == 0 and one_seed.confirm is None
    s = summary(study, SEARCH, total=4, confirmed=([1, 2], [0, 1]))
    assert s.chosen == 1
    c = s.confirm
    assert (c.seeds, c.candidates, c.one_seed_choice) == ([1, 2], [0, 1], 0)
    assert c.worst_drop == pytest.approx(0.007)   # seed 1: 0.990 - 0.983
    assert c.spread == pytest.approx(0.007)       # 0.990 at seed 0, 0.983 at seed 1
    assert s.trials[0].drops() == pytest.approx([0.005, 0.025, 0.007])
    assert [t.seeds is not None for t in s.trials] == [True, True, False, False]
    # checks already in the study count, whoever asked for them (a resumed search keeps them)
    assert summary(study, SEARCH, total=4, confirmed=([1, 2], [0])).chosen == 1
    study.set_user_attr("seed_check:1:2", _check(2, 0.970, 0.994))  # trial 1 now misses too
    none_held = summary(study, SEARCH, total=4, confirmed=([1, 2], [0, 1]))
    assert none_held.chosen is None
    # the closest is the smallest worst drop: trial 1 (0.994 - 0.970) against trial 0's 0.025
    assert max(none_held.trials[1].drops()) == pytest.approx(0.024)
    assert _least_worst(none_held, True).number == 1
    # what the search says as it exits 3
    assert no_choice_message(none_held, "latency", True) == (
        "search: none of the 3 feasible trials met the constraints at seeds 1, 2 as well on "
        "validation (checked: trials 0, 1); closest: trial 1, worst drop 0.0240 below its teacher")


def test_candidates_come_in_the_order_the_choice_prefers_them_one_per_config():
    study = _study()
    study.add_trial(_trial(4, 0.990, 0.012))  # trial 4: trial 1's config again (TPE re-samples)
    records = summary(study, SEARCH, total=5).trials
    order = preference(records, "latency", True, 0.0)
    assert [r.number for r in order] == [0, 1, 2]  # trial 3 infeasible, trial 4 a repeat of 1
    checks = seed_checks(study)
    assert holds(records[1], checks[1], [1, 2]) and not holds(records[0], checks[0], [1, 2])
    assert not holds(records[2], [], [1, 2])


def test_the_report_lists_each_candidate_at_each_seed(tmp_path):
    from compress.report.search import confirm_section

    s = summary(_study(), SEARCH, total=4, confirmed=([1, 2], [0, 1]))
    html = confirm_section(s, "accuracy")
    assert "One seed alone would have chosen trial 0." in html
    rows = html.split("<tr")[2:]
    assert len(rows) == 2
    assert "<td>0</td>" in rows[0] and "96.50% / 99.00%" in rows[0] and rows[0].endswith(
        "<td>0.025</td><td>no</td></tr>")
    assert rows[1].startswith(' class="chosen"') and "98.30% / 99.00%" in rows[1] \
        and rows[1].endswith("<td>0.007</td><td>yes</td></tr></table>")
    assert confirm_section(summary(_study(), SEARCH, total=4), "accuracy") == ""


@pytest.mark.parametrize("line, message", [
    ("    seeds: -1", "search.confirm.seeds: must be >= 0 (got -1)"),
    ("    seed: 2", "search.confirm.seed: unknown key; did you mean 'seeds'? expected one of: "
                    "seeds, top"),
])
def test_a_bad_confirm_key_is_one_line_naming_its_yaml_line(tmp_path, line, message):
    from click.testing import CliRunner

    from compress.cli import cli

    text = (ROOT / "pipelines" / "mobile-search.yaml").read_text().splitlines()
    at = next(i for i, t in enumerate(text) if t.startswith("    seeds: 2"))
    text[at] = line
    path = tmp_path / "search.yaml"
    path.write_text("\n".join(text) + "\n")
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: {path}:{at + 1} {message}"
