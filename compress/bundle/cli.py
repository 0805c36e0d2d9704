"""``compress deploy``: parse, re-cut the bundle for a target, print. The logic lives in
``compress.bundle.deploy``."""

from __future__ import annotations

from pathlib import Path

import click


def register(group: click.Group) -> None:
    """Add ``deploy`` to the ``compress`` command group."""
    group.add_command(deploy)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--target", required=True, metavar="android|ios|edge-x86|edge-arm64|web",
              help="Device class; its profile is compress/bundle/profiles/<target>.yaml.")
def deploy(run_dir: Path, target: str) -> None:
    """Write RUN_DIR/deploy/<target>/ from RUN_DIR/bundle for one device class."""
    from compress.bundle.deploy import deploy_target
    from compress.errors import CompressError

    try:
        out, manifest = deploy_target(run_dir, target)
    except CompressError as e:  # one line and the exit code, also outside the compress group
        click.echo(f"error: {e}", err=True)
        raise SystemExit(e.exit_code) from None
    rt, prof = manifest.runtime, manifest.target.profile
    for line in manifest.target.notices:
        click.echo(f"notice: {line}", err=True)
    click.echo(f"target     {target}: {prof['description']}")
    click.echo(f"model      {rt.model} ({manifest.files[rt.model].bytes} bytes, "
               f"platform {prof['platform']}, ORT style {prof['ort_optimization_style']})")
    click.echo(f"providers  {' > '.join(rt.providers)}; {rt.threads} thread(s), "
               f"opt {rt.opt_level}")
    click.echo(f"notes      {out / 'APP.md'} (generated from this manifest)")
    click.echo(f"written    {out}")
