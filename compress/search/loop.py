"""``compress search``: the study over a pipeline's ``search.space``, then the chosen trial run as
an ordinary pipeline in RUN_DIR (measured on the test split beside the teacher, bundled), and
report.json's ``search`` object.

    RUN_DIR/search/study.db       the Optuna study (default storage; --storage for a server)
    RUN_DIR/search/trial-NNNN/    each trial's run folder (probe/ inside when it was probed)
    RUN_DIR/search/store/         finished stage folders shared by the trials (hard links)
    RUN_DIR/search/search.json    every trial, the Pareto front, the chosen trial
    RUN_DIR/search/chosen.yaml    the pipeline with the chosen values (what to ship)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from compress.common.files import sha256_json, write_text
from compress.config.pipeline import PipelineConfig
from compress.engine.lock import RunLock
from compress.engine.step_cache import search_store
from compress.errors import CompressError, GateError, InputError
from compress.records import Failure, RunReport, SearchRecord, StudyAttrs
from compress.search import study as st
from compress.search.confirm import confirm, confirm_seeds
from compress.search.records import pareto, summary, trial_line
from compress.search.trial import pipeline_raw, shared_engine, validated


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'search' / 'study.db').resolve()}"


def run_search(cfg: PipelineConfig, raw: dict, run_dir: Path, *, trials: int | None = None,
               storage: str | None = None, resume: bool = False, device: str = "auto",
               log=print) -> dict:
    """Run (or continue) the search, then the chosen trial; returns the run's report."""
    search = cfg.search
    if search is None:
        raise InputError("search: the pipeline has no 'search:' section (space, objective, "
                         "constraints)")
    search_dir = Path(run_dir) / "search"
    search_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(search_dir):
        study, storage_, local = _open_study(cfg, raw, search_dir, storage, resume)
        ctx = _context(cfg, raw, search_dir, device, log)
        total = trials or search.trials
        if search.sampler == "grid":  # each point once
            total = min(total, st.grid_size(search))
        if local:
            _retry_dead(study, storage_)  # we hold the run lock: a trial still 'running' was killed
        _optimize(study, ctx, total)
        rounds = st.final_round(study, ctx) if search.objective == "latency" else {}
        if rounds:
            log(f"search: {len(rounds)} feasible trials timed again side by side beside the "
                "teacher (the choice reads this round)")
        result = summary(study, search, total, ctx.higher, rounds)
        if result.chosen is not None and confirm_seeds(ctx):
            candidates = confirm(study, ctx, result.trials)
            result = summary(study, search, total, ctx.higher, rounds,
                             (confirm_seeds(ctx), candidates))
            _log_confirmed(result, log)
        result.dump(search_dir / "search.json")
    if result.chosen is None:
        _no_choice(cfg, Path(run_dir), ctx, result)
    return _run_chosen(cfg, raw, run_dir, ctx, result, log)


def _log_confirmed(result: SearchRecord, log) -> None:
    c = result.confirm
    if c.worst_drop is None:
        return
    seeds = ", ".join(str(s) for s in c.seeds)
    log(f"search: trial {result.chosen} held at seeds {seeds} as well: worst drop "
        f"{c.worst_drop:.4f} below its teacher, spread {c.spread:.4f} (validation)"
        + ("" if c.one_seed_choice == result.chosen
           else f"; one seed alone would have chosen trial {c.one_seed_choice}"))


def _no_choice(cfg: PipelineConfig, run_dir: Path, ctx: st.SearchContext,
               result: SearchRecord) -> None:
    """No trial to run: every trial failed (exit 1, naming the first error), or none met the
    constraints (exit 3, after a report that holds the search and says which trial came
    closest)."""
    trials = result.trials
    failed = [t for t in trials if t.state == "fail"]
    if trials and len(failed) == len(trials):
        first = min(failed, key=lambda t: t.number)
        raise CompressError(f"search: all {len(trials)} trials failed; the first, trial "
                            f"{first.number} ({', '.join(first.overrides)}): "
                            f"{first.error or 'see its run folder'}")
    message = no_choice_message(result, ctx.search.objective, ctx.higher)
    _write_search_report(cfg, run_dir, ctx, result, message)
    raise GateError(f"{message}; see {run_dir / 'report.json'}")


def no_choice_message(result: SearchRecord, objective: str, higher: bool) -> str:
    """Why nothing was chosen, and which trial came closest: the one missing the fewest
    constraints (then the fastest), or, when the choice was confirmed at more seeds, the one with
    the smallest worst-seed drop."""
    counts, c = result.counts, result.confirm
    if c is not None:
        message = (f"search: none of the {counts.feasible} feasible trials met the constraints at "
                   f"seeds {', '.join(str(s) for s in c.seeds)} as well on validation (checked: "
                   f"trials {', '.join(str(n) for n in c.candidates)})")
        close = _least_worst(result, higher)
        return message + ("" if close is None else f"; closest: trial {close.number}, worst "
                          f"drop {max(close.drops(higher)):.4f} below its teacher")
    failed = sum(t.state == "fail" for t in result.trials)
    message = (f"search: none of {counts.trials} trials met the constraints on validation "
               f"({counts.complete} trained, {counts.trials - counts.complete - failed}"
               f" stopped, {failed} failed)")
    close = st.closest(result.trials, objective)
    return message + ("" if close is None else
                      f"; closest: trial {close.number}, {st.missed(close.constraints)}")


def _least_worst(result: SearchRecord, higher: bool):
    checked = [t for t in result.trials if t.number in result.confirm.candidates and t.seeds]
    return min(checked, key=lambda t: max(t.drops(higher)), default=None)


def _write_search_report(cfg: PipelineConfig, run_dir: Path, ctx: st.SearchContext,
                         result: SearchRecord, message: str) -> None:
    """report.json (and its renderings) for a search that chose no trial: no models of its own,
    the search object, and why."""
    from compress.report.assemble import assemble
    from compress.report.render import write_reports

    report = assemble(cfg.name, sha256_json(cfg.model_dump(mode="json")), ctx.device, [], [], None,
                      True, run_dir)
    report.failure = Failure(reason="gate", message=message)
    report.search = result
    write_reports(report, run_dir)


def _open_study(cfg: PipelineConfig, raw: dict, search_dir: Path, storage: str | None,
                resume: bool):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    local = storage is None
    url = storage or default_storage(search_dir.parent)
    store = st.make_storage(url)
    key = sha256_json({k: v for k, v in raw.items() if k != "search"} | {
        "space": cfg.search.model_dump(mode="json")["space"], "objective": cfg.search.objective,
        "constraints": cfg.search.constraints.model_dump(mode="json")})
    names = {s.study_name: s for s in optuna.get_all_study_summaries(store)}
    if cfg.name in names and names[cfg.name].n_trials and not resume:
        raise InputError(f"search: {url} holds study {cfg.name!r} with {names[cfg.name].n_trials} "
                         "trials already; pass --resume to continue it, or --out for a new run")
    seed = cfg.search.seed if cfg.search.seed is not None else cfg.seed
    if not local and cfg.search.sampler != "grid":
        # workers sharing one study must not all draw the same candidates; the grid sampler's
        # workers must share one seed instead: it shuffles the grid with it, and the grid ids in
        # the storage mean the same point in every worker only when the order is the same
        seed = (seed * 1_000_003 + os.getpid()) % (2**31)
    study = optuna.create_study(storage=store, study_name=cfg.name, load_if_exists=True,
                                direction="minimize", sampler=st.make_sampler(cfg.search, seed),
                                pruner=st.make_pruner(cfg.search.warmup_epochs, cfg.search.early_stop))
    had = StudyAttrs.of(study).config_key
    if had is None:
        study.set_user_attr("config_key", key)
    elif had != key:
        raise InputError(f"search: study {cfg.name!r} in {url} was made for another pipeline or "
                         "search space; use another --out (or --storage) for this one")
    return study, store, local


def _context(cfg: PipelineConfig, raw: dict, search_dir: Path, device: str, log) -> st.SearchContext:
    from compress.tasks import make_task

    task = make_task(cfg.task)
    return st.SearchContext(cfg, raw, cfg.search, search_dir, search_store(search_dir / "store"),
                            device, higher=task.higher_is_better, log=log)


def _optimize(study, ctx: st.SearchContext, total: int) -> None:
    """Run trials until the study holds ``total`` finished ones. Trials other workers are running
    count; a worker that has nothing left to start waits for them, and when one goes silent
    (killed) its trial is failed and queued again, so this worker runs it."""
    import optuna

    done = st.finished(study)
    if done:
        ctx.log(f"search: {done} of {total} trials finished already")
    minutes = ctx.search.timeout_minutes
    deadline = time.monotonic() + minutes * 60 if minutes else None
    while True:
        done, running, failed = st.finished(study), st.count(study, "RUNNING"), st.count(study, "FAIL")
        left = None if deadline is None else deadline - time.monotonic()
        if done >= total or (left is not None and left <= 0):
            break
        if failed >= max(total, 3) + _retried(study):
            ctx.log(f"search: stopping with {done} of {total} trials finished: {failed} trials "
                    "failed (their errors are in search.json)")
            break
        if total - done - running <= 0:
            time.sleep(st.HEARTBEAT_S)  # the rest is running elsewhere: wait, adopt the dead
            optuna.storages.fail_stale_trials(study)
            continue
        # one trial per call, the counts read again before each (so no count of finished trials
        # is needed inside the call): a worker that took every remaining trial at once would also
        # start the points other workers are running (Optuna's grid sampler hands out an
        # unfinished point once all are started)
        study.optimize(lambda t: st.objective(t, ctx), n_trials=1,
                       timeout=left, catch=(CompressError,), gc_after_trial=True,
                       callbacks=[lambda s, t: ctx.log(trial_line(s, t, total))])


def _retried(study) -> int:
    """Failed trials that were queued again (a killed worker's): they do not count as failures."""
    return sum(1 for t in study.get_trials(deepcopy=False) if "failed_trial" in t.system_attrs)


def _retry_dead(study, storage) -> None:
    """Fail trials a killed run left 'running' and queue them again (Optuna's retry callback),
    through the storage's public interface. Not ``study.tell``: it would ask the sampler, and
    the grid sampler stops the study when the dead trial held its last point."""
    import optuna

    retry = st.retry_callback()
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        retry(study, storage.get_trial(trial_id))


def _run_chosen(cfg: PipelineConfig, raw: dict, run_dir: Path, ctx: st.SearchContext,
                result: SearchRecord, log) -> RunReport:
    """The chosen trial's pipeline in RUN_DIR (its stages fetched from the store), with the
    benchmark on the test split and the package stage; report.json gets the search object."""
    from compress.report.render import write_reports

    chosen = result.trial(result.chosen)
    full = pipeline_raw(raw, chosen.overrides, drop=())
    chosen_cfg = validated(full, f"chosen trial {chosen.number}")
    write_text(ctx.search_dir / "chosen.yaml", f"# compress search {cfg.name}: trial "
               f"{chosen.number} ({', '.join(chosen.overrides)})\n"
               + yaml.safe_dump(full, sort_keys=False))
    log(f"search: chosen trial {chosen.number}; running it in {run_dir} (test split, bundle)")
    t0 = time.perf_counter()
    engine = shared_engine(chosen_cfg, full, Path(run_dir), ctx.store, ctx.device, log)
    failure: GateError | None = None
    try:
        report = engine.run()
    except GateError as e:  # the gates wrote their report; add the search to it
        failure, report = e, _read_report(run_dir)
    report.search = result.model_copy(
        update={"chosen_run_seconds": round(time.perf_counter() - t0, 1)})
    write_reports(report, Path(run_dir))
    if failure is not None:
        raise failure
    return report


def _read_report(run_dir: Path) -> RunReport:
    return RunReport.load(Path(run_dir) / "report.json")


__all__ = ["run_search", "default_storage", "pareto"]
