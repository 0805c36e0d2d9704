"""``compress compare``: two runs' models side by side, and a regression check for CI.

Exit codes: 0 ok (a regression without --fail-on-regression too, with a warning); 2 a run
directory or its report.json is missing or invalid; 3 a regression with --fail-on-regression.
"""

from __future__ import annotations

from pathlib import Path

import click

from compress.errors import GateError


def register(group: click.Group) -> None:
    """Add ``compare`` to the ``compress`` command group."""
    group.add_command(compare)


@click.command()
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(path_type=Path), metavar="OUT",
              help="Also write the comparison as JSON.")
@click.option("--fail-on-regression", is_flag=True,
              help="Exit 3 when RUN_B's final model is slower or worse than RUN_A's.")
@click.option("--tolerance", type=click.FloatRange(0, 10), default=0.10, show_default=True,
              help="Allowed slowdown of the final model's p50 relative to the teacher both "
                   "runs hold (0.10 = 10%); absolute when their teachers differ.")
@click.option("--quality-tolerance", type=click.FloatRange(0, 1e6), default=0.005,
              show_default=True,
              help="Allowed loss of the final model's headline quality, in its units "
                   "(0.005 = 0.5 points of accuracy).")
def compare(run_a: Path, run_b: Path, json_out: Path | None, fail_on_regression: bool,
            tolerance: float, quality_tolerance: float) -> None:
    """Compare the models of RUN_A (reference) and RUN_B (candidate), matched by name.

    Speed is judged as each run's final p50 over its teacher's p50 (measured in one run), B's
    over A's; the settings that differ (config.resolved.yaml) are listed."""
    from compress.report.compare import compare_reports, format_comparison, load_run, run_dir_of
    from compress.report.config_diff import compare_configs

    a, b = load_run(run_a), load_run(run_b)
    config = compare_configs(run_dir_of(run_a), run_dir_of(run_b))
    result = compare_reports(a, b, tolerance, quality_tolerance, config)
    click.echo(format_comparison(result, run_a, run_b))
    if json_out is not None:
        from compress.common.files import write_json

        write_json(json_out, {"a": str(run_a), "b": str(run_b), **result})
    final = result["final"]
    if final["checked"] and final["regressed"]:
        message = f"regression of the final model: {'; '.join(final['reasons'])}"
        if fail_on_regression:
            raise GateError(message)
        click.echo(f"warning: {message} (pass --fail-on-regression to fail)", err=True)
