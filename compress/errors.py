"""The project's error hierarchy. Each class carries the CLI exit code it maps to."""

from __future__ import annotations


class CompressError(Exception):
    """Base class: a failure the CLI reports as one line, without a traceback."""

    exit_code = 1


class ConfigError(CompressError):
    """The pipeline YAML or a command-line override is invalid."""

    exit_code = 2


class InputError(CompressError):
    """A file or argument the user pointed to cannot be used (missing, corrupt, wrong shape)."""

    exit_code = 2


class StageError(CompressError):
    """A stage failed at run time. The message names the stage and the cause."""

    exit_code = 1

    def __init__(self, message: str, stage: str | None = None):
        self.stage = stage
        super().__init__(f"stage {stage}: {message}" if stage else message)


class GateError(CompressError):
    """A check failed: a latency regression, or an accuracy or latency gate of the config."""

    exit_code = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so a terminated run unwinds the
    same way: the report marked failed, the lock released, the step's temp folder removed."""
