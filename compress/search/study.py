"""The Optuna side of a search: storage, sampler, constraints, the early-stop pruner, and the
objective that runs one trial (probe first, then train, then measure on validation).

Optuna decides which candidate comes next (its samplers, with the constraints each trial sets); its storage
is the record of every trial, so a killed search resumes from it and several workers can share
one study through a database server. Each trial's measurements travel in the trial's user
attributes under ``result``, ``probe`` and ``stopped``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.config.pipeline import PipelineConfig
from compress.config.search import Dimension, SearchConfig, encode, is_scalar_choice, override
from compress.engine.step_cache import FolderStore, link_or_copy
from compress.errors import CompressError, GateError
from compress.records import StudyAttrs, TrialAttrs, TrialRecord, TrialResult
from compress.search.trial import (
    TrialStopped,
    measure_val,
    pipeline_raw,
    probe_raw,
    run_candidate,
    validated,
)
from compress.train.checkpoint import EpochMetrics

HEARTBEAT_S, GRACE_S = 5, 20  # a worker silent this long has died: its trial is failed and retried
UNKNOWN = 1.0e6  # a constraint not measured (a stopped trial): counted as unmet


def make_storage(url: str):
    """Optuna's RDB storage with heartbeats: a trial whose worker stopped beating for GRACE_S
    (killed, machine lost) is failed and queued again with the same values."""
    import warnings

    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    from compress.errors import InputError

    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 4-5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(_driver(url), engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                              grace_period=GRACE_S, heartbeat_stale_trial_callback=retry_callback())
    except ImportError as e:
        raise InputError(f"--storage {url}: no database driver for it ({e.__cause__ or e}); for "
                         "PostgreSQL: pip install 'compress[postgres]'") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise InputError(f"--storage {url}: cannot open the study database "
                         f"({str(e).splitlines()[0]})") from None


def _driver(url: str) -> str:
    """``postgresql://`` through psycopg2 (the ``postgres`` extra) when psycopg 3 is absent:
    SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql:// URL."""
    if not url.startswith("postgresql://"):
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def retry_callback():
    import warnings

    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=2)


def make_sampler(search: SearchConfig, seed: int):
    import optuna

    if search.sampler == "grid":
        grid = {k: _grid_values(d) for k, d in search.space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)  # reads Trial.set_constraint's values
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(2, search.trials // 4)))


def _grid_values(d: Dimension) -> list[Any]:
    values = d.grid() or []
    return values if is_scalar_choice(values) else [encode(v) for v in values]


def constraints_of(trial) -> dict[str, float]:
    """The trial's constraint values by name; each value <= 0 is met."""
    return dict(TrialAttrs.of(trial).constraints or {"unmeasured": UNKNOWN})


def set_constraints(trial, values: dict[str, float]) -> None:
    """Record them for the report and hand them to Optuna's constrained samplers."""
    trial.set_user_attr("constraints", values)
    for k, v in values.items():
        trial.set_constraint(k, v)


def suggest(trial, space: dict[str, Dimension]) -> tuple[dict[str, Any], list[str]]:
    """The trial's value for each searched key, and the ``--set`` overrides they make."""
    import json

    params: dict[str, Any] = {}
    for key, d in space.items():
        if d.choices is not None:
            if is_scalar_choice(d.choices):
                params[key] = trial.suggest_categorical(key, d.choices)
            else:  # lists and mappings travel through Optuna as JSON text
                params[key] = json.loads(trial.suggest_categorical(
                    key, [encode(v) for v in d.choices]))
        elif d.is_int:
            params[key] = trial.suggest_int(key, d.low, d.high, step=d.step or 1, log=d.log)
        else:
            params[key] = trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
    return params, [override(k, v) for k, v in params.items()]


# -- what is required -------------------------------------------------------------------------

def needed_quality(search: SearchConfig, teacher_val: float | None, higher: bool) -> float | None:
    """The validation quality a trial must reach (in the metric's own direction)."""
    c = search.constraints
    bars = []
    if c.max_accuracy_drop is not None and teacher_val is not None:
        bars.append(teacher_val - c.max_accuracy_drop if higher else teacher_val + c.max_accuracy_drop)
    if c.min_quality is not None:
        bars.append(c.min_quality)
    if not bars:
        return None
    return max(bars) if higher else min(bars)


def constraint_values(search: SearchConfig, quality: float | None, teacher_val: float | None,
                      p50: float | None, nbytes: int | None, higher: bool) -> dict[str, float]:
    """Each constraint's value (<= 0: met; UNKNOWN when not measured, as for a stopped trial)."""
    c, sign = search.constraints, (1.0 if higher else -1.0)
    out: dict[str, float] = {}
    if c.max_accuracy_drop is not None:
        out["max_accuracy_drop"] = (UNKNOWN if quality is None or teacher_val is None
                                    else round(sign * (teacher_val - quality) - c.max_accuracy_drop, 6))
    if c.min_quality is not None:
        out["min_quality"] = UNKNOWN if quality is None else round(sign * (c.min_quality - quality), 6)
    if c.max_bytes is not None:
        out["max_bytes"] = UNKNOWN if nbytes is None else float(nbytes - c.max_bytes)
    if c.max_latency_ms is not None:
        out["max_latency_ms"] = UNKNOWN if p50 is None else round(p50 - c.max_latency_ms, 6)
    return out or {"none": 0.0}


def missed(constraints: dict[str, float] | None) -> str:
    """``misses max_accuracy_drop by 0.0123, max_latency_ms by 0.004``: each unmet constraint
    and by how much (in its own unit), or that it was not measured (a stopped trial)."""
    unmet = {k: v for k, v in (constraints or {}).items() if v > 0}
    if not unmet:
        return "meets every constraint"
    return "misses " + ", ".join(f"{k} (not measured)" if v >= UNKNOWN else f"{k} by {v:.4g}"
                                 for k, v in unmet.items())


def closest(trials: list[TrialRecord], objective: str) -> TrialRecord | None:
    """The trained (complete) trial that misses the fewest constraints, then the fastest (or
    smallest) of those; None without one."""
    done = [t for t in trials if t.state == "complete" and t.constraints]
    if not done:
        return None

    def own(t: TrialRecord) -> float:  # the trial's own figure, as it was measured
        v = t.p50_ms if objective == "latency" else t.bytes
        return float("inf") if v is None else v

    return min(done, key=lambda t: (sum(v > 0 for v in t.constraints.values()), own(t)))


def make_pruner(warmup: int, enabled: bool):
    """Optuna's pruner interface over ``cannot_reach``: stop a trial at a distill epoch (after
    ``warmup``) when its best validation quality so far, plus the largest gain any finished trial
    of the same schedule made after that same epoch, stays below the bar."""
    import optuna

    class ReachPruner(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            step = trial.last_step
            if not enabled or step is None:
                return False
            best = max(v for s, v in trial.intermediate_values.items() if s <= step)
            return cannot_reach(study, step, best, warmup, TrialAttrs.of(trial).schedule) is not None

    return ReachPruner()


def schedule_of(cfg: PipelineConfig) -> int | None:
    """The distill stage's epoch count: trials compare learning curves only within one schedule
    (a 30-epoch learning-rate schedule is not as far along at epoch 5 as a 15-epoch one)."""
    for kind, stage in cfg.stage_list():
        if kind == "distill":
            return int(stage.epochs)
    return None


def cannot_reach(study, step: int, best_now: float, warmup: int,
                 schedule: int | None = None) -> float | None:
    """The quality the trial would have needed by ``step`` when it cannot reach the bar, else
    None. Only finished trials of the same ``schedule`` (distill epochs) count as evidence.
    Values are in the 'higher is better' direction (as the trials report them)."""
    import optuna

    need = StudyAttrs.of(study).needed_quality
    if step < warmup or need is None:
        return None
    gains = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        iv = t.intermediate_values
        if step in iv and TrialAttrs.of(t).schedule == schedule:
            gains.append(max(iv.values()) - max(v for s, v in iv.items() if s <= step))
    if not gains or best_now + max(gains) >= need:
        return None
    return need - max(gains)


# -- the objective ----------------------------------------------------------------------------

@dataclass
class SearchContext:
    """What every trial of one search shares."""

    cfg: PipelineConfig
    raw: dict
    search: SearchConfig
    search_dir: Path
    store: FolderStore
    device: str
    higher: bool = True
    log: Any = print
    notes: dict[str, Any] = field(default_factory=dict)

    def trial_dir(self, number: int) -> Path:
        return self.search_dir / f"trial-{number:04d}"


def best_feasible(study) -> tuple[int, float] | None:
    """(number, objective) of the best complete trial that meets every constraint."""
    import optuna

    best = None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if all(c <= 0 for c in constraints_of(t).values()) and (best is None or t.value < best[1]):
            best = (t.number, t.value)
    return best


def objective(trial, ctx: SearchContext) -> float:
    """Run one trial; raises ``optuna.TrialPruned`` when the probe or an epoch stops it."""
    import optuna

    t0 = time.perf_counter()
    for key in ("result", "probe", "stopped", "error", "constraints"):
        trial.set_user_attr(key, None)
    params, overrides = suggest(trial, ctx.search.space)
    trial.set_user_attr("overrides", overrides)
    trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
    run_dir = ctx.trial_dir(trial.number)
    try:
        raw = pipeline_raw(ctx.raw, overrides)
        cfg = validated(raw, f"trial {trial.number} ({', '.join(overrides)})")
        trial.set_user_attr("schedule", schedule_of(cfg))
        trial.set_user_attr("distill_key", distill_key(raw))
        _same_distill_stopped(trial, ctx, t0)
        _probe(trial, ctx, cfg, raw, run_dir, t0)
        return _train_and_measure(trial, ctx, cfg, raw, run_dir, t0)
    except optuna.TrialPruned:
        raise
    except GateError as e:
        # the candidate cannot pass a check of its own pipeline (a prune budget its student cannot
        # reach, a quantize limit set to fail): a dead end of the space, not a crash. Stopped, so
        # it counts and the sampler learns to avoid it (Optuna's samplers skip failed trials).
        _stopped(trial, {"at": "check", "reason": str(e)}, constraint_values(
            ctx.search, None, None, None, None, ctx.higher), t0)
    except CompressError as e:
        trial.set_user_attr("error", str(e))
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        raise


def _objective_of(search: SearchConfig, p50: float, nbytes: int) -> float:
    return p50 if search.objective == "latency" else float(nbytes)


def _probe(trial, ctx: SearchContext, cfg, raw: dict, run_dir: Path, t0: float) -> None:
    """Time the untrained candidate; stop the trial when it cannot meet a latency or size
    constraint, or cannot beat the best feasible trial by the objective. Against the best
    feasible trial, latency is compared as a ratio timed side by side in one session (absolute
    p50s of tiny models timed minutes apart differ by tens of percent on a shared CPU)."""

    c, s = ctx.search.constraints, ctx.search
    slack = s.probe_slack
    best = best_feasible(trial.study) if slack is not None else None
    if not s.probe or (c.max_latency_ms is None and c.max_bytes is None and best is None):
        return
    praw = probe_raw(raw)
    out = run_candidate(validated(praw, "probe"), praw, run_dir / "probe", ctx.store, ctx.device)
    rival = _rival(trial.study, ctx, best, run_dir / "probe") if best is not None else None
    found = measure_val(out, run_dir / "probe", out.students + ([rival] if rival else []),
                        max_samples=1)
    mine = [m for m in found if rival is None or m.name != rival.name]
    p50, nbytes = min(m.p50 for m in mine), min(m.bytes for m in mine)
    rival_p50 = next((m.p50 for m in found if rival is not None and m.name == rival.name), None)
    record = {"p50_ms": round(p50, 5), "bytes": nbytes, "seconds": round(time.perf_counter() - t0, 2)}
    if rival_p50 is not None:
        record.update(rival=best[0], rival_p50_ms=round(rival_p50, 5), ratio=round(p50 / rival_p50, 4))
    trial.set_user_attr("probe", record)
    reason = None
    if c.max_latency_ms is not None and p50 > c.max_latency_ms:
        reason = f"untrained p50 {p50:.4f} ms > max_latency_ms {c.max_latency_ms}"
    elif c.max_bytes is not None and nbytes > c.max_bytes:
        reason = f"untrained size {nbytes} B > max_bytes {c.max_bytes}"
    elif best is not None and s.objective == "latency" and rival_p50 is not None:
        if p50 > rival_p50 * (1 + slack):
            reason = (f"untrained p50 {p50:.4f} ms is {p50 / rival_p50:.2f}x best feasible trial "
                      f"{best[0]}'s {rival_p50:.4f} ms timed beside it (> {1 + slack:g}x)")
    elif best is not None and _objective_of(s, p50, nbytes) > best[1] * (1 + slack):
        what = "p50" if s.objective == "latency" else "size"
        reason = (f"untrained {what} {_objective_of(s, p50, nbytes):.5g} > best feasible trial "
                  f"{best[0]}'s {best[1]:.5g} x {1 + slack:g}")
    if reason is not None:
        _stopped(trial, {"at": "probe", "reason": reason}, constraint_values(
            s, None, None, p50, nbytes, ctx.higher), t0)


def _rival(study, ctx: SearchContext, best: tuple[int, float], folder: Path):
    """The best feasible trial's final ONNX model, linked into ``folder`` to be timed beside the
    candidate; None when its file is gone (another machine's trial)."""
    from compress.artifacts import ModelArtifact

    t = next(t for t in study.get_trials(deepcopy=False) if t.number == best[0])
    res = TrialAttrs.of(t).result
    src = ctx.search_dir / res.final_path if res else None
    if src is None or not src.is_file():
        return None
    dst = folder / "rival" / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)  # a resumed trial's earlier probe
    link_or_copy(str(src), str(dst))
    return ModelArtifact.from_onnx(f"trial-{best[0]}", dst, precision=res.precision)


def distill_key(raw: dict) -> str | None:
    """A hash of what the distill stage's result depends on: the pipeline up to and including
    its distill entry (teacher, student, data, seed, target, the stages before). None without one."""
    from compress.common.files import sha256_json

    stages = raw.get("stages") or []
    at = next((i for i, e in enumerate(stages) if next(iter(e)) == "distill"), None)
    if at is None:
        return None
    return sha256_json({k: v for k, v in raw.items() if k != "stages"} | {"stages": stages[:at + 1]})


def _same_distill_stopped(trial, ctx: SearchContext, t0: float) -> None:
    """Stop a trial at once when an earlier trial with the same distill was stopped early: the
    distill would run the same epochs to the same validation curve."""
    import optuna

    key = TrialAttrs.of(trial).distill_key
    if key is None:
        return
    for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)):
        attrs = TrialAttrs.of(t)
        at = attrs.stopped
        if attrs.distill_key == key and at is not None and at.at == "epoch" and at.epoch is not None:
            _stopped(trial, {**at.as_dict(), "same_as": t.number,
                             "reason": f"same distill as trial {t.number}, which {at.reason}"},
                     constraint_values(ctx.search, at.quality, StudyAttrs.of(trial.study).teacher_val,
                                       None, None, ctx.higher), t0)


def _stopped(trial, stopped: dict, constraints: dict[str, float], t0: float) -> None:
    import optuna

    trial.set_user_attr("stopped", stopped)
    set_constraints(trial, constraints)
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
    raise optuna.TrialPruned(stopped["reason"])


def _train_and_measure(trial, ctx: SearchContext, cfg, raw: dict, run_dir: Path, t0: float) -> float:
    sign = 1.0 if ctx.higher else -1.0
    early_stop = ctx.search.quality_constraint()
    best: list[float] = []

    def on_epoch(m: EpochMetrics) -> None:
        ctx.log(epoch_line(trial.number, m))
        if not early_stop or m.kind != "distill" or m.loop != "distill":
            return  # the early stop compares distill learning curves only
        trial.report(sign * m.value, m.epoch)
        best.append(max([sign * m.value, *best]))
        if trial.should_prune():
            need = cannot_reach(trial.study, m.epoch, best[-1], ctx.search.warmup_epochs,
                                schedule_of(cfg))
            if need is not None:
                raise TrialStopped(m.epoch, sign * best[-1], sign * need)

    try:
        out = run_candidate(cfg, raw, run_dir, ctx.store, ctx.device, on_epoch)
    except TrialStopped as e:
        _stopped(trial, {"at": "epoch", "epoch": e.epoch, "quality": round(e.quality, 5),
                         "needed": round(e.needed, 5), "reason": str(e)},
                 constraint_values(ctx.search, e.quality, StudyAttrs.of(trial.study).teacher_val,
                                   None, None, ctx.higher), t0)
    teacher, final = measure_val(out, run_dir, [out.teacher_onnx, out.final])
    _note_teacher(trial.study, ctx, teacher.accuracy)
    cons = constraint_values(ctx.search, final.accuracy, teacher.accuracy, final.p50, final.bytes,
                             ctx.higher)
    set_constraints(trial, cons)
    trial.set_user_attr("result", TrialResult(
        val_quality=round(final.accuracy, 6), teacher_val_quality=round(teacher.accuracy, 6),
        p50_ms=round(final.p50, 5), teacher_p50_ms=round(teacher.p50, 5),
        speedup_vs_teacher=final.speedup_vs_teacher, bytes=final.bytes,
        params_count=final.params, macs=final.macs, precision=final.precision,
        val_nll=final.quality["nll"] if "nll" in final.quality else None,
        final=final.name, final_path=f"{run_dir.name}/{final.path}",
        teacher_path=f"{run_dir.name}/{teacher.path}", feasible=all(v <= 0 for v in cons.values()),
        clock=final.clock, ran=out.engine.ran).as_dict())
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
    return _objective_of(ctx.search, final.p50, final.bytes)


def epoch_line(number: int, m: EpochMetrics) -> str:
    """``trial 3: 01-distill epoch 5/30  loss 0.4120  val_accuracy 0.9712``: a trial's progress."""
    loop = "" if m.loop == m.kind else f" ({m.loop})"
    return (f"trial {number}: {m.stage}{loop} epoch {m.epoch}/{m.epochs}  loss {m.loss:.4f}  "
            f"val_{m.metric} {m.value:.4f}")


def _note_teacher(study, ctx: SearchContext, teacher_val: float) -> None:
    """The teacher's validation quality, and the bar it sets, for every later trial's early stop."""
    if StudyAttrs.of(study).teacher_val is None:
        study.set_user_attr("teacher_val", teacher_val)
        need = needed_quality(ctx.search, teacher_val, ctx.higher)
        if need is not None:
            study.set_user_attr("needed_quality", need if ctx.higher else -need)


def final_round(study, ctx: SearchContext) -> dict[int, dict[str, float]]:
    """Every feasible trial's final model timed again, all in one interleaved session beside the
    teacher, on validation inputs: ``{trial number: {p50_ms, speedup_vs_teacher}}``.

    Each trial was timed when it finished, minutes apart from the others; the p50 of one tiny
    model moved by half between two such sessions, and ratios timed side by side move far less.
    The choice reads this round (records.choose). Empty
    when the space searches ``data.*`` or ``target.*``: the trials' models then take other inputs
    or were timed under other settings, and each trial's own figure stands."""
    import optuna

    from compress.artifacts import ModelArtifact
    from compress.bench.measure import benchmark_models
    from compress.config.stages import BenchmarkConfig
    from compress.data.sources import load_data_guarded
    from compress.tasks import make_task

    if any(key.split(".")[0] in ("data", "target") for key in ctx.search.space):
        return {}  # trials differ in their inputs or timing settings: one session cannot hold them
    models, numbers, teacher = [], {}, None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        res = TrialAttrs.of(t).result
        path = ctx.search_dir / res.final_path if res else None
        if res is None or not res.feasible or not path.is_file():
            continue
        if teacher is None and (ctx.search_dir / res.teacher_path).is_file():
            teacher = ModelArtifact.from_onnx("teacher", ctx.search_dir / res.teacher_path)
        art = ModelArtifact.from_onnx(f"trial-{t.number}", path, precision=res.precision)
        same = next((m for m in models if m.sha256 == art.sha256), None)  # one file, timed once
        if same is None:
            models.append(art)
        numbers[t.number] = (same or art).name
    if len(models) < 2 or teacher is None:
        return {}
    folder = ctx.search_dir / "final-round"
    data = load_data_guarded(ctx.cfg.data, ctx.cfg.seed)
    found = benchmark_models([teacher, *models], make_task(ctx.cfg.task), data.val,
                             BenchmarkConfig(max_samples=1), ctx.cfg.target, folder, ctx.search_dir)
    by_name = {m.name: m for m in found}
    return {n: {"p50_ms": round(by_name[name].p50, 5),
                "speedup_vs_teacher": by_name[name].speedup_vs_teacher}
            for n, name in numbers.items()}


def count(study, state: str) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState[state],)))


def grid_size(search: SearchConfig) -> int:
    return math.prod(len(d.grid() or []) for d in search.space.values())


def finished(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def is_finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)
