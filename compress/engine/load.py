"""One way to load a config for a run: ``compress pipeline``, ``compress validate`` and
``compress search`` all call ``load_run_config``, so what one accepts the others accept.

It checks what a run would meet first, before anything is trained: the schema (with ``file:line``
and the YAML path), the files the config names, an ONNX teacher's inputs and outputs against the
task and the data (external data files included), every ``python:`` factory imported in a
child process (a data factory called when ``package`` needs the preprocessing it returns); and it
puts the YAML's folder on the import path, so a ``python:`` factory
beside the YAML imports without PYTHONPATH, from whatever folder the command runs in (every
trial of a search included). Torch-free: ``validate`` never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from compress.config.pipeline import PipelineConfig


def load_run_config(path: Path, overrides: tuple[str, ...] = ()) -> tuple[PipelineConfig, dict]:
    """The validated config and its raw mapping (with ``overrides`` applied); raises
    ``ConfigError`` or ``InputError`` naming the file, the YAML path and what is expected."""
    from compress.common.imports import add_search_dir
    from compress.config.factories import check_factories
    from compress.config.pipeline import check_files, load_config
    from compress.export.llm_teacher import check_llm_config
    from compress.export.teacher_io import check_teacher_config, check_teacher_file

    path = Path(path)
    cfg, raw = load_config(path, overrides)
    check_teacher_file(cfg, path)
    check_files(cfg, path, overrides)
    check_teacher_config(cfg, path)
    check_llm_config(cfg, path)
    check_factories(cfg, path)  # in a child process: user code may import torch
    add_search_dir(path.parent)  # a `python:` factory beside the YAML imports as is
    return cfg, raw
