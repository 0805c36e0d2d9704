"""A search resumed after a kill fails the trials the killed run left running and queues them
again, through Optuna's public storage interface (no private attributes)."""

from __future__ import annotations

import optuna
import pytest

from compress.search.loop import _retry_dead
from compress.search.study import make_storage


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_left_running_is_failed_and_queued_again_with_its_values(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}")
    sampler = optuna.samplers.GridSampler({"x": [1, 2]}, seed=0)
    study = optuna.create_study(storage=storage, study_name="s", sampler=sampler)
    done = study.ask()
    study.tell(done, done.suggest_categorical("x", [1, 2]) * 1.0)
    dead = study.ask()  # the last grid point, running when its worker was killed
    x = dead.suggest_categorical("x", [1, 2])

    _retry_dead(study, storage)

    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE,
                                         optuna.trial.TrialState.FAIL,
                                         optuna.trial.TrialState.WAITING]
    assert trials[2].system_attrs["failed_trial"] == dead.number
    assert trials[2].params == {"x": x}
    _retry_dead(study, storage)  # nothing is running now: nothing changes
    assert len(study.get_trials()) == 3
