"""What a search says about its trials: search.json / report.json's ``search`` object, the Pareto
front, the chosen trial, and the one progress line per finished trial."""

from __future__ import annotations

from compress.config.search import SearchConfig
from compress.records import (
    Bounds,
    Confirmation,
    Counts,
    FinalRound,
    SearchRecord,
    SeedCheck,
    StudyAttrs,
    TrialAttrs,
    TrialRecord,
)

PREFIX = "seed_check:"  # the study attribute of one seed check: seed_check:TRIAL:SEED


def seed_checks(study) -> dict[int, list[SeedCheck]]:
    """The checks a study holds: trial number -> its checks, by seed."""
    out: dict[int, list[SeedCheck]] = {}
    for key, value in study.user_attrs.items():
        if key.startswith(PREFIX):
            number = int(key.split(":")[1])
            out.setdefault(number, []).append(SeedCheck.model_validate(value))
    return {n: sorted(checks, key=lambda c: c.seed) for n, checks in out.items()}


def trial_record(t) -> TrialRecord:
    """One Optuna trial as search.json lists it."""
    retry_of = t.system_attrs["failed_trial"] if "failed_trial" in t.system_attrs else None
    return TrialRecord.of(t.number, t.params, t.state.name.lower(), TrialAttrs.of(t), retry_of)


def pareto(records: list[TrialRecord], objective: str, higher: bool = True) -> list[int]:
    """Numbers of the feasible complete trials no other feasible trial beats on both the
    objective (lower) and validation quality; every complete trial when none is feasible."""
    done = [r for r in records if r.state == "complete" and r.val_quality is not None]
    pool = [r for r in done if r.feasible] or done
    sign = 1.0 if higher else -1.0

    def beats(a: TrialRecord, b: TrialRecord) -> bool:
        oa, ob = a.objective(objective), b.objective(objective)
        qa, qb = sign * a.val_quality, sign * b.val_quality
        return oa <= ob and qa >= qb and (oa < ob or qa > qb)

    front = [r for r in pool if not any(beats(o, r) for o in pool if o is not r)]
    return [r.number for r in sorted(front, key=lambda r: r.objective(objective))]


def choose(records: list[TrialRecord], objective: str, higher: bool = True,
           tie: float = 0.0, seeds: list[int] | None = None) -> int | None:
    """The fastest (or smallest) complete trial meeting every constraint. Trials within ``tie``
    (a fraction) of the best objective are equally fast: the best validation quality among them
    wins, then the lower validation loss (``val_nll``, where the task measures one: a steady
    number where accuracy on a few hundred samples ties), then the lower objective.

    ``seeds``: the choice was confirmed at these seeds. Only a trial checked at each of them and
    feasible at every one may be chosen, and among tied trials the smallest worst-seed drop
    below the teacher wins."""
    sign = 1.0 if higher else -1.0
    ok = [r for r in records if r.state == "complete" and r.feasible]
    if seeds:
        ok = [r for r in ok if r.seeds is not None
              and {c.seed for c in r.seeds if c.feasible} >= set(seeds)]
    if not ok:
        return None
    best = min(r.objective(objective) for r in ok)
    near = [r for r in ok if r.objective(objective) <= best * (1 + tie)]

    def rank(r: TrialRecord) -> tuple[float, float, float]:
        nll = float("inf") if r.val_nll is None else r.val_nll
        quality = max(r.drops(higher)) if seeds else -sign * r.val_quality
        return (quality, nll, r.objective(objective))

    return min(near, key=rank).number


def confirmation(records: list[TrialRecord], seeds: list[int], candidates: list[int],
                 chosen: int | None, one_seed: int | None, higher: bool) -> Confirmation:
    """What the seed checks said about the choice: its worst drop and its spread."""
    pick = next((r for r in records if r.number == chosen), None)
    worst = spread = None
    if pick is not None:
        worst = max(pick.drops(higher))
        values = [pick.val_quality, *(c.val_quality for c in pick.seeds or [])]
        spread = round(max(values) - min(values), 6)
    return Confirmation(seeds=seeds, candidates=candidates, one_seed_choice=one_seed,
                        worst_drop=worst, spread=spread)


def summary(study, search: SearchConfig, total: int, higher: bool = True,
            final_round: dict[int, dict[str, float]] | None = None,
            confirmed: tuple[list[int], list[int]] | None = None) -> SearchRecord:
    """``final_round``: trial number -> its p50 and speedup when every feasible trial was timed
    again in one session (study.final_round); the front and the choice read it. ``confirmed``:
    the confirming seeds and the trials checked at them (search.confirm); the choice then
    takes only a trial that held at every seed."""
    records = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    checks = seed_checks(study) if confirmed else {}
    for r in records:
        timed = (final_round or {}).get(r.number)
        r.final_round = FinalRound(**timed) if timed else None
        r.seeds = checks.get(r.number)
    one_seed = choose(records, search.objective, higher, search.tie)
    chosen, confirm = one_seed, None
    if confirmed:
        seeds, candidates = confirmed
        chosen = choose(records, search.objective, higher, search.tie, seeds)
        confirm = confirmation(records, seeds, candidates, chosen, one_seed, higher)
    stopped = [r.stopped for r in records if r.stopped]
    epochs = sorted(s.epoch for s in stopped if s.at == "epoch" and s.epoch is not None)
    return SearchRecord(
        study=study.study_name, objective=search.objective, sampler=search.sampler,
        constraints=Bounds(**search.constraints.model_dump(exclude_none=True)), split="val",
        teacher_val_quality=StudyAttrs.of(study).teacher_val,
        counts=Counts(
            target=total, trials=len(records),
            complete=sum(r.state == "complete" for r in records),
            feasible=sum(r.state == "complete" and r.feasible for r in records),
            stopped_untrained=sum(s.at == "probe" for s in stopped),
            stopped_early=len(epochs), stopped_at_epochs=epochs,
            stopped_by_check=sum(s.at == "check" for s in stopped),
            failed=sum(r.state == "fail" for r in records)),
        trials=records,
        pareto=pareto(records, search.objective, higher),
        tie=search.tie,
        chosen=chosen,
        confirm=confirm)


def _params_text(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def trial_line(study, t, total: int) -> str:
    """``trial 3/20 #4 [complete] params  val 0.9861  p50 0.0312 ms  best: #2 0.0298 ms``."""
    from compress.search.study import best_feasible, finished, missed

    r = trial_record(t)
    if r.state == "complete":
        what = f"val {r.val_quality:.4f}  p50 {r.p50_ms:.4f} ms  {r.bytes} B" + (
            "" if r.feasible else f"  ({missed(r.constraints)})")
    elif r.stopped:
        prefix = {"probe": "stopped untrained: ", "check": "cannot pass: "}
        what = (prefix[r.stopped.at] if r.stopped.at in prefix else "") + r.stopped.reason
    else:
        what = f"failed: {r.error or 'see its run folder'}"
    best = best_feasible(study)
    best_text = "none feasible yet" if best is None else f"#{best[0]} {best[1]:.5g}"
    return (f"trial {finished(study)}/{total} #{r.number} [{r.state}] {_params_text(r.params)}"
            f"  {what}  best so far: {best_text}")
