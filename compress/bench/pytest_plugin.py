"""pytest plugin: latency regression checks inside any test suite.

Registered through the ``pytest11`` entry point ``compress_latency``, so installing ``compress``
gives every suite the ``assert_not_slower`` fixture::

    def test_model_stays_fast(assert_not_slower):
        assert_not_slower("model.onnx", baseline="tests/latency/model.json", tolerance=0.10)

    def test_int8_beats_fp32(assert_not_slower):
        assert_not_slower("int8.onnx", than="fp32.onnx", tolerance=0.0)

    def test_student_vs_its_teacher(assert_not_slower):
        assert_not_slower("student.onnx", baseline="tests/latency/student.json",
                          reference="teacher.onnx", tolerance=0.05)

A baseline times the model beside a reference (the built-in workload, or ``reference=``) in
session pairs in several fresh processes; the check times both again, interleaved, and its
interval covers how far sessions and fresh processes move their ratio (``baseline.py``).
``pytest --latency-update`` rewrites the baselines instead of checking them (do it deliberately,
on the machine that runs the checks). An inconclusive verdict passes with a warning, unless the
call passes ``strict=True`` or pytest runs with ``--latency-strict``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest


class LatencyInconclusiveWarning(UserWarning):
    """The interval still straddled the tolerance line when the time cap was reached."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("compress-latency", "latency regression checks (compress)")
    group.addoption("--latency-update", action="store_true", default=False,
                    help="Rewrite latency baselines instead of checking them.")
    group.addoption("--latency-strict", action="store_true", default=False,
                    help="Fail latency checks whose verdict is inconclusive.")


@dataclass
class LatencyChecker:
    """Callable behind the ``assert_not_slower`` fixture."""

    update: bool = False
    strict: bool = False
    updated: list[str] = field(default_factory=list)

    def __call__(
        self,
        model: str | Path,
        baseline: str | Path | None = None,
        than: str | Path | None = None,
        tolerance: float = 0.10,
        threads: int | None = None,
        opt_level: str | None = None,
        max_seconds: float = 20.0,
        strict: bool | None = None,
        reference: str | Path | None = None,
        processes: int = 1,
    ):
        """Fail the test if ``model`` is slower than its ``baseline`` file or than model ``than``.

        ``reference`` (with ``baseline=``) is the model timed beside it, e.g. its teacher; by
        default the built-in reference workload. ``processes`` > 1 spreads the check over that
        many fresh processes. Returns the ``Verdict`` (``compress.bench.baseline``).
        """
        from compress.bench.baseline import Verdict, check_against_baseline, check_vs, save_baseline
        from compress.bench.compare import CompareSettings
        from compress.bench.stats import INCONCLUSIVE
        from compress.errors import CompressError

        if (baseline is None) == (than is None):
            raise TypeError("assert_not_slower: pass exactly one of baseline= or than=")
        if reference is not None and baseline is None:
            raise TypeError("assert_not_slower: reference= goes with baseline=")
        strict = self.strict if strict is None else strict
        try:
            if baseline is not None and self.update:
                data = save_baseline(model, baseline, threads or 1, opt_level or "all",
                                     CompareSettings(max_seconds=max_seconds),
                                     reference=reference)
                self.updated.append(str(baseline))
                n = data["normalized"]
                return Verdict("updated", 1.0, 1.0, 1.0, [],
                               f"{baseline}: baseline rewritten ({model} = {n['ratio']:.4f}x "
                               f"{reference or 'the reference workload'})")
            if baseline is not None:
                if not Path(baseline).is_file():
                    pytest.fail(f"{baseline}: latency baseline not found; run pytest with "
                                "--latency-update to create it", pytrace=False)
                verdict = check_against_baseline(model, baseline, tolerance, threads, opt_level,
                                                 max_seconds, reference=reference,
                                                 processes=processes)
            else:
                verdict, _ = check_vs(model, than, tolerance, threads or 1, opt_level or "all",
                                      max_seconds)
        except CompressError as e:
            pytest.fail(f"latency check could not run: {e}", pytrace=False)
        if verdict.failed(strict):
            pytest.fail(f"latency regression: {verdict.message}", pytrace=False)
        if verdict.verdict == INCONCLUSIVE:
            warnings.warn(LatencyInconclusiveWarning(verdict.message), stacklevel=2)
        return verdict


_KEY = pytest.StashKey[LatencyChecker]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = LatencyChecker(update=config.getoption("latency_update"),
                                        strict=config.getoption("latency_strict"))


@pytest.fixture
def assert_not_slower(request: pytest.FixtureRequest) -> LatencyChecker:
    """``assert_not_slower(model, baseline=FILE | than=OTHER, tolerance=0.10)``."""
    return request.config.stash[_KEY]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    checker = config.stash.get(_KEY, None)
    if checker and checker.updated:
        terminalreporter.write_line(
            f"compress latency: rewrote {len(checker.updated)} baseline(s): "
            + ", ".join(checker.updated))
