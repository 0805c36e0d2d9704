"""Confirming the choice at more seeds: a search judges each trial at one seed, on a few hundred
validation samples, and a small student pruned hard can meet a one-point budget at that seed and
miss it by two at the next. Before choosing, the best candidates (in the order the choice prefers
them, one per distinct config) are trained again at the run's seed + 1, + 2, ...: another data
split, another teacher and another training order, as ``--set seed=N`` gives a user. Only a
candidate whose worst seed meets the quality constraints on validation may then be chosen.

Each check is a study attribute ``seed_check:TRIAL:SEED`` (a ``SeedCheck``), so a resumed search
keeps the checks it made; the runs live in ``search/trial-NNNN/seed-S/`` and share the store.
"""

from __future__ import annotations

import time

from compress.errors import CompressError
from compress.records import SeedCheck, TrialRecord
from compress.search.records import PREFIX, choose, seed_checks
from compress.search.study import SearchContext, constraint_values, missed
from compress.search.trial import measure_val, pipeline_raw, run_candidate, validated

QUALITY_KEYS = ("max_accuracy_drop", "min_quality")


def confirm_seeds(ctx: SearchContext) -> list[int]:
    """The seeds a choice is confirmed at (none without a quality constraint: latency and size
    do not depend on the seed)."""
    if not ctx.search.quality_constraint():
        return []
    return [ctx.cfg.seed + i for i in range(1, ctx.search.confirm.seeds + 1)]


def preference(records: list[TrialRecord], objective: str, higher: bool,
               tie: float) -> list[TrialRecord]:
    """The feasible trials in the order the one-seed choice prefers them (``choose`` again and
    again without the trials already taken), one per distinct config."""
    pool = [r for r in records if r.state == "complete" and r.feasible]
    order: list[TrialRecord] = []
    while pool:
        number = choose(pool, objective, higher, tie)
        best = next(r for r in pool if r.number == number)
        order.append(best)
        pool = [r for r in pool if r.overrides != best.overrides]
    return order


def holds(record: TrialRecord, checks: list[SeedCheck], seeds: list[int]) -> bool:
    """Feasible at its own seed and at every confirming seed."""
    done = {c.seed: c for c in checks}
    return record.feasible and all(s in done and done[s].feasible for s in seeds)


def confirm(study, ctx: SearchContext, records: list[TrialRecord]) -> list[int]:
    """Train the preferred candidates at the confirming seeds, ``search.confirm.top`` at a
    time, until a batch holds one whose every seed meets the constraints (or none are left).
    Returns the trial numbers confirmed, in order."""
    seeds = confirm_seeds(ctx)
    if not seeds:
        return []
    order = preference(records, ctx.search.objective, ctx.higher, ctx.search.tie)
    top, confirmed = ctx.search.confirm.top, []
    for start in range(0, len(order), top):
        batch = order[start:start + top]
        for record in batch:
            have = {c.seed for c in seed_checks(study).get(record.number, [])}
            for seed in seeds:
                if seed not in have:
                    check = check_seed(ctx, record, seed)
                    study.set_user_attr(f"{PREFIX}{record.number}:{seed}", check.as_dict())
            confirmed.append(record.number)
        checks = seed_checks(study)
        if any(holds(r, checks.get(r.number, []), seeds) for r in batch):
            break
        ctx.log(f"search: none of trials {', '.join(str(r.number) for r in batch)} held at "
                f"every seed; confirming the next candidates")
    return confirmed


def check_seed(ctx: SearchContext, record: TrialRecord, seed: int) -> SeedCheck:
    """One candidate trained at ``seed`` and measured on that seed's validation split beside
    that seed's teacher. A run that fails its own checks does not hold."""
    t0 = time.perf_counter()
    run_dir = ctx.trial_dir(record.number) / f"seed-{seed}"
    rel = str(run_dir.relative_to(ctx.search_dir))
    ctx.log(f"search: confirming trial {record.number} at seed {seed} "
            f"({', '.join(record.overrides)})")
    raw = pipeline_raw(ctx.raw, [*record.overrides, f"seed={seed}"])
    try:
        cfg = validated(raw, f"trial {record.number} at seed {seed}")
        out = run_candidate(cfg, raw, run_dir, ctx.store, ctx.device)
        teacher, final = measure_val(out, run_dir, [out.teacher_onnx, out.final])
    except CompressError as e:
        ctx.log(f"search: trial {record.number} at seed {seed}: {e}")
        return SeedCheck(seed=seed, val_quality=None, teacher_val_quality=None, feasible=False,
                         constraints={}, seconds=round(time.perf_counter() - t0, 2), run=rel,
                         error=str(e))
    cons = constraint_values(ctx.search, final.accuracy, teacher.accuracy, None, None, ctx.higher)
    cons = {k: v for k, v in cons.items() if k in QUALITY_KEYS}
    check = SeedCheck(seed=seed, val_quality=round(final.accuracy, 6),
                      teacher_val_quality=round(teacher.accuracy, 6),
                      feasible=all(v <= 0 for v in cons.values()), constraints=cons,
                      seconds=round(time.perf_counter() - t0, 2), run=rel)
    ctx.log(f"search: trial {record.number} at seed {seed}: val {check.val_quality:.4f}, teacher "
            f"{check.teacher_val_quality:.4f}, "
            + ("meets the constraints" if check.feasible else missed(cons)))
    return check

