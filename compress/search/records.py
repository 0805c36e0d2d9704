"""What a search says about its trials: search.json / report.json's ``search`` object, the Pareto
front, the chosen trial, and the one progress line per finished trial."""

from __future__ import annotations

from typing import Any

from compress.config.search import SearchConfig


def trial_record(t) -> dict[str, Any]:
    """One Optuna trial as search.json lists it."""
    attrs = t.user_attrs
    res = attrs.get("result") or {}
    state = t.state.name.lower()
    return {
        "number": t.number, "params": dict(t.params), "overrides": attrs.get("overrides") or [],
        "state": state, "val_quality": res.get("val_quality"),
        "teacher_val_quality": res.get("teacher_val_quality"), "val_nll": res.get("val_nll"),
        "p50_ms": res.get("p50_ms"),
        "bytes": res.get("bytes"), "speedup_vs_teacher": res.get("speedup_vs_teacher"),
        "params_count": res.get("params"), "precision": res.get("precision"),
        "seconds": attrs.get("seconds"), "feasible": bool(res.get("feasible")),
        "constraints": attrs.get("constraints"), "probe": attrs.get("probe"),
        "stopped": attrs.get("stopped"), "error": attrs.get("error"),
        "retry_of": t.system_attrs.get("failed_trial"), "worker": attrs.get("worker"),
        "run": f"search/trial-{t.number:04d}", "stages_run": res.get("ran"),
    }


def _objective(r: dict, objective: str) -> float:
    """Latency: the final round's p50 (all feasible trials timed side by side) where there was one."""
    if objective != "latency":
        return r["bytes"]
    return (r.get("final_round") or {}).get("p50_ms", r["p50_ms"])


def pareto(records: list[dict], objective: str, higher: bool = True) -> list[int]:
    """Numbers of the feasible complete trials no other feasible trial beats on both the
    objective (lower) and validation quality; every complete trial when none is feasible."""
    done = [r for r in records if r["state"] == "complete" and r["val_quality"] is not None]
    pool = [r for r in done if r["feasible"]] or done
    sign = 1.0 if higher else -1.0

    def beats(a: dict, b: dict) -> bool:
        oa, ob = _objective(a, objective), _objective(b, objective)
        qa, qb = sign * a["val_quality"], sign * b["val_quality"]
        return oa <= ob and qa >= qb and (oa < ob or qa > qb)

    front = [r for r in pool if not any(beats(o, r) for o in pool if o is not r)]
    return sorted((r["number"] for r in front), key=lambda n: next(
        _objective(r, objective) for r in front if r["number"] == n))


def choose(records: list[dict], objective: str, higher: bool = True, tie: float = 0.0) -> int | None:
    """The fastest (or smallest) complete trial meeting every constraint. Trials within ``tie``
    (a fraction) of the best objective are equally fast: the best validation quality among them
    wins, then the lower validation loss (``val_nll``, where the task measures one: a steady
    number where accuracy on a few hundred samples ties), then the lower objective."""
    sign = 1.0 if higher else -1.0
    ok = [r for r in records if r["state"] == "complete" and r["feasible"]]
    if not ok:
        return None
    best = min(_objective(r, objective) for r in ok)
    near = [r for r in ok if _objective(r, objective) <= best * (1 + tie)]

    def rank(r: dict) -> tuple[float, float, float]:
        nll = r.get("val_nll")
        return (-sign * r["val_quality"], float("inf") if nll is None else nll, _objective(r, objective))

    return min(near, key=rank)["number"]


def summary(study, search: SearchConfig, total: int, higher: bool = True,
            final_round: dict[int, dict[str, float]] | None = None) -> dict[str, Any]:
    """``final_round``: trial number -> its p50 and speedup when every feasible trial was timed
    again in one session (study.final_round); the front and the choice read it."""
    records = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    for r in records:
        r["final_round"] = (final_round or {}).get(r["number"])
    stopped = [r for r in records if r["stopped"]]
    epochs = sorted(r["stopped"]["epoch"] for r in stopped if r["stopped"].get("at") == "epoch")
    return {
        "study": study.study_name, "objective": search.objective, "sampler": search.sampler,
        "constraints": search.constraints.model_dump(exclude_none=True), "split": "val",
        "teacher_val_quality": study.user_attrs.get("teacher_val"),
        "counts": {
            "target": total, "trials": len(records),
            "complete": sum(r["state"] == "complete" for r in records),
            "feasible": sum(r["state"] == "complete" and r["feasible"] for r in records),
            "stopped_untrained": sum(r["stopped"].get("at") == "probe" for r in stopped),
            "stopped_early": len(epochs), "stopped_at_epochs": epochs,
            "stopped_by_check": sum(r["stopped"].get("at") == "check" for r in stopped),
            "failed": sum(r["state"] == "fail" for r in records),
        },
        "trials": records,
        "pareto": pareto(records, search.objective, higher),
        "tie": search.tie,
        "chosen": choose(records, search.objective, higher, search.tie),
    }


def _params_text(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def trial_line(study, t, total: int) -> str:
    """``trial 3/20 #4 [complete] params  val 0.9861  p50 0.0312 ms  best: #2 0.0298 ms``."""
    from compress.search.study import best_feasible, finished

    r = trial_record(t)
    if r["state"] == "complete":
        what = f"val {r['val_quality']:.4f}  p50 {r['p50_ms']:.4f} ms  {r['bytes']} B" + (
            "" if r["feasible"] else "  (misses a constraint)")
    elif r["stopped"]:
        at = r["stopped"]
        what = {"probe": "stopped untrained: ", "check": "cannot pass: "}.get(at["at"], "") + at["reason"]
    else:
        what = f"failed: {r['error'] or 'see its run folder'}"
    best = best_feasible(study)
    best_text = "none feasible yet" if best is None else f"#{best[0]} {best[1]:.5g}"
    return (f"trial {finished(study)}/{total} #{r['number']} [{r['state']}] {_params_text(r['params'])}"
            f"  {what}  best so far: {best_text}")
