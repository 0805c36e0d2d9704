"""``compress search CONFIG.yaml``: the fastest model that meets the config's constraints.

Exit codes: 0 a chosen trial, run and bundled; 1 a run failed, or every trial failed (the first
trial's error named); 2 bad config, arguments or a study that belongs to another config; 3 no
trial met the constraints (report.json still written, the closest trial named), or a gate of the
chosen run failed.
"""

from __future__ import annotations

from pathlib import Path

import click


def register(group: click.Group) -> None:
    """Add ``search`` to the ``compress`` command group."""
    group.add_command(search)


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<name>).")
@click.option("--trials", type=click.IntRange(1, 100_000),
              help="Finished trials to reach (default: search.trials).")
@click.option("--storage", metavar="URL",
              help="Optuna storage, e.g. postgresql://user@host/db, shared by several workers "
                   "(default: sqlite in RUN_DIR/search/study.db).")
@click.option("--resume", is_flag=True, help="Continue the study stored there (or start it).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the final summary.")
@click.option("--log-json", type=click.Path(path_type=Path), metavar="FILE",
              help="Append structured events as JSON lines.")
def search(config: Path, out: Path | None, trials: int | None, storage: str | None, resume: bool,
           device: str, quiet: bool, log_json: Path | None) -> None:
    """Search CONFIG's `search.space` for the fastest model meeting `search.constraints`."""
    from compress.common.console import Console, use
    from compress.engine.load import load_run_config
    from compress.errors import InputError
    from compress.report.render import models_table
    from compress.search.loop import run_search

    console = use(Console(quiet=quiet, json_path=log_json))
    cfg, raw = load_run_config(config)
    if cfg.search is None:
        raise InputError(f"{config}: no 'search:' section; expected search.space, objective and "
                         "constraints")
    if storage is not None and "://" not in storage:
        raise InputError(f"--storage {storage}: expected a database URL such as "
                         "postgresql://user:password@host/db or sqlite:///path/study.db")
    run_dir = out or Path("runs") / cfg.name
    report = run_search(cfg, raw, run_dir, trials=trials, storage=storage, resume=resume,
                        device=device, log=console.info)
    n = report.search.counts
    if report.models:
        console.summary(models_table(report.models))
    console.summary(f"search: {n.trials} trials, {n.feasible} feasible, "
                    f"{n.stopped_untrained} stopped untrained, "
                    f"{n.stopped_early} stopped early, "
                    f"{n.stopped_by_check} stopped by a check they cannot pass, "
                    f"{n.failed} failed; chosen trial {report.search.chosen}")
    c = report.search.confirm
    if c is not None and c.worst_drop is not None:
        console.summary(f"search: confirmed at seeds {', '.join(str(s) for s in c.seeds)}: "
                        f"{len(c.candidates)} candidates trained again; the chosen trial's worst "
                        f"seed is {c.worst_drop:.4f} below its teacher, spread {c.spread:.4f} "
                        "(validation)")
    console.summary(f"report: {run_dir / 'report.html'}  final: {report.final}  "
                    f"bundle: {run_dir / 'bundle'}")
