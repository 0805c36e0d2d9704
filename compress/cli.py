"""The ``compress`` command: parse, load config, run, render. No logic of its own.

Exit codes: 0 success; 1 a stage or command failed; 2 bad config, arguments or input file;
3 a check failed (a latency regression or a gate).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress.errors import CompressError, Terminated


class _Group(click.Group):
    """Maps the project's errors to one line on stderr and their exit code (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CompressError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except Terminated:  # SIGTERM (kill, a CI timeout): 128 + 15, as shells report it
            click.echo("error: terminated; finished stages are kept: run the same command to "
                       "resume", err=True)
            ctx.exit(143)
        except KeyboardInterrupt:  # Ctrl-C: 128 + SIGINT, as shells report it
            click.echo("error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compress")
def cli() -> None:
    """Distill, prune, quantize and export PyTorch models to small, fast ONNX artifacts."""


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--no-resume", is_flag=True, help="Re-run every stage even if a finished record matches.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bars (plain lines when stderr is not a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the final summary.")
@click.option("--log-json", type=click.Path(path_type=Path), metavar="FILE",
              help="Append structured events (stage start/end, epochs, final models) as JSON lines.")
@click.option("--nproc", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Train with N processes on this machine (DDP through torchrun's launcher; "
                   "one GPU each on CUDA).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where finished teacher steps are shared between run directories "
                   "(default $COMPRESS_CACHE, else ~/.cache/compress).")
def pipeline(config: Path, out: Path | None, overrides: tuple[str, ...], device: str,
             no_resume: bool, progress: bool, quiet: bool, log_json: Path | None, nproc: int,
             cache_dir: Path | None) -> None:
    """Run the pipeline described by CONFIG (a YAML file). Under torchrun, every rank runs it."""
    import os

    from compress.common.console import Console, use
    from compress.engine.load import load_run_config

    _terminate_as_interrupt()
    rank = int(os.environ.get("RANK", "0"))
    console = use(Console(quiet=quiet or rank != 0, json_path=log_json if rank == 0 else None))
    cfg, raw = load_run_config(config, overrides)
    if nproc > 1:
        if cache_dir is not None:  # the workers read it from the environment
            os.environ["COMPRESS_CACHE"] = str(cache_dir)
        _launch(nproc, config, out, overrides, device, no_resume, progress, quiet, log_json)
        return
    run_dir = out or Path("runs") / cfg.name
    _run_pipeline(cfg, raw, run_dir, device, not no_resume, progress and not quiet, console, cache_dir)


def _terminate_as_interrupt() -> None:
    """SIGTERM raises ``Terminated`` (a KeyboardInterrupt), so it unwinds as Ctrl-C does."""
    import signal

    def raise_terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated()

    signal.signal(signal.SIGTERM, raise_terminated)


def _launch(nproc: int, config: Path, out: Path | None, overrides: tuple[str, ...], device: str,
            no_resume: bool, progress: bool, quiet: bool, log_json: Path | None) -> None:
    """Start ``nproc`` workers of this same command through torch's elastic launcher."""
    import os

    from compress.errors import InputError
    from compress.train.distributed import launch

    if "WORLD_SIZE" in os.environ:
        raise InputError("--nproc: this process was started by torchrun already; pass --nproc to "
                         "one of them only")
    argv = ["pipeline", str(config), "--device", device, "--progress" if progress else "--no-progress"]
    argv += ["--out", str(out)] if out else []
    argv += [a for o in overrides for a in ("--set", o)]
    argv += (["--no-resume"] if no_resume else []) + (["--quiet"] if quiet else [])
    argv += ["--log-json", str(log_json)] if log_json else []
    code = launch(nproc, argv)
    if code:
        raise SystemExit(code)


def _run_pipeline(cfg, raw: dict, run_dir: Path, device: str, resume: bool, progress: bool,
                  console, cache_dir: Path | None = None) -> None:
    from compress.engine.run import Engine
    from compress.report.render import models_table
    from compress.train.distributed import shutdown

    try:
        report = Engine(cfg, raw, run_dir, device, resume=resume, progress=progress,
                        log=console.info, cache_dir=cache_dir).run()
    finally:
        shutdown()
    if report is None:  # a rank other than 0: rank 0 prints the summary
        return
    if report.models:
        console.summary(models_table(report.models))
    console.summary(f"report: {run_dir / 'report.html'}  final: {report.final}")


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
def validate(config: Path, overrides: tuple[str, ...]) -> None:
    """Check CONFIG as a run would: the schema, the files it names, an ONNX teacher's I/O."""
    from compress.engine.load import load_run_config

    cfg, _ = load_run_config(config, overrides)
    click.echo(f"{config}: valid ({len(cfg.stages)} stages: {', '.join(k for k, _ in cfg.stage_list())})")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the pipeline YAML."""
    from compress.config.pipeline import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def _register_subsystems() -> None:
    """Commands that live beside their subsystems (bench, inspect, compare, deploy)."""
    from compress.bench.cli import register as register_bench
    from compress.bundle.cli import register as register_deploy
    from compress.report.cli import register as register_report
    from compress.search.cli import register as register_search

    register_bench(cli)
    register_report(cli)
    register_deploy(cli)
    register_search(cli)


_register_subsystems()


def main() -> None:
    cli(prog_name="compress")


if __name__ == "__main__":
    main()
