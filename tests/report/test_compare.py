"""`compress compare RUN_A RUN_B`: deltas, the regression verdict, exit codes and exact messages."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import MODELS, build_report, save_run

from compress.cli import cli
from compress.records import Failure
from compress.report.cli import register
from compress.report.compare import compare_reports

if "compare" not in cli.commands:  # until compress/cli.py registers it
    register(cli)


def run_cli(*args) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["compare", *[str(a) for a in args]])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def runs(tmp_path):
    """Run B: final model 30% slower and 0.6 pp less accurate, teacher unchanged."""
    a = save_run(tmp_path / "a", build_report(tmp_path / "a", samples=False))
    b_report = build_report(tmp_path / "b", scale={"student-int8": 1.3},
                            acc_shift={"student-int8": -0.006}, samples=False)
    return a, save_run(tmp_path / "b", b_report)


def test_deltas_and_regression_exit_code(runs, tmp_path):
    a, b = runs
    code, out, err = run_cli(a, b, "--json", tmp_path / "cmp.json")
    assert code == 0
    assert err == ("warning: regression of the final model: p50 1.30x run A's relative to the "
                   "teacher (tolerance 10%); accuracy -0.60 pp (tolerance 0.50 pp) "
                   "(pass --fail-on-regression to fail)\n")
    lines = out.splitlines()
    assert lines[0] == f"A  {a}  (digits-mobile, final student-int8, done)"
    row = next(x for x in lines if x.startswith("student-int8")).split()
    assert row == ["student-int8", "96.67%", "96.07%", "-0.60", "pp", "0.0310", "0.0403",
                   "1.30x", "1.30x", "21.00kB", "21.00kB", "1.00x"]
    teacher = next(x for x in lines if x.startswith("teacher")).split()
    assert teacher[3:5] == ["+0.00", "pp"] and teacher[7] == "1.00x"
    assert ("final student-int8: accuracy -0.60 pp, p50 1.30x relative to the teacher (absolute "
            "1.30x), size 1.00x: REGRESSED: p50 1.30x run A's relative to the teacher (tolerance "
            "10%); accuracy -0.60 pp (tolerance 0.50 pp)") in lines
    assert "note:" not in out  # same machine fingerprint, both runs wrote their settings
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert data["final"]["p50_ratio"] == pytest.approx(1.3)
    assert data["final"]["quality_delta"] == pytest.approx(-0.006)
    assert (data["final"]["slower"], data["final"]["quality_lost"]) == (True, True)

    code, _, err = run_cli(a, b, "--fail-on-regression")
    assert code == 3
    assert err == ("error: regression of the final model: p50 1.30x run A's relative to the "
                   "teacher (tolerance 10%); accuracy -0.60 pp (tolerance 0.50 pp)\n")


def test_within_tolerance_passes(runs):
    a, b = runs
    code, out, err = run_cli(a, b, "--fail-on-regression", "--tolerance", "0.35",
                             "--quality-tolerance", "0.01")
    assert (code, err) == (0, "")
    assert out.splitlines()[-2] == ("final student-int8: accuracy -0.60 pp, p50 1.30x relative "
                                    "to the teacher (absolute 1.30x), size 1.00x: no regression")


def test_faster_and_better_is_no_regression(runs):
    a, b = runs
    code, _, err = run_cli(b, a, "--fail-on-regression")  # B -> A: 0.77x p50, +0.6 pp
    assert (code, err) == (0, "")


def test_lower_is_better_metric(tmp_path):
    a, b = build_report(tmp_path), build_report(tmp_path, acc_shift={"student-int8": 0.02})
    for r in (a, b):
        for m in r.models:
            m.metric, m.higher_is_better = "wer", False
    res = compare_reports(a, b)
    assert res["final"]["quality_lost"] is True and res["final"]["slower"] is False
    assert res["final"]["reasons"] == ["wer +0.0200 (tolerance 0.0050)"]


def test_models_matched_by_name_and_machine_note(tmp_path):
    a = build_report(tmp_path / "a", samples=False)
    b = build_report(tmp_path / "b", samples=False)
    b.models = [m for m in b.models if m.name != "student-pruned"]
    b.models.append(b.models[-1].model_copy(update={"name": "student-qat"}))
    b.machine.cpu = "Apple M2"
    res = compare_reports(a, b)
    assert [(r["name"], r["in"]) for r in res["models"]] == [
        ("teacher", "both"), ("student", "both"), ("student-pruned", "a"),
        ("student-int8", "both"), ("student-qat", "b")]
    assert res["machine_differences"] == ["cpu: 'Intel(R) Xeon(R) Platinum 8480+' -> 'Apple M2'"]
    code, out, _ = run_cli(save_run(tmp_path / "a", a), save_run(tmp_path / "b", b))
    assert code == 0
    assert ("note: the runs' machines differ (cpu: 'Intel(R) Xeon(R) Platinum 8480+' -> "
            "'Apple M2'): latencies from different machines or days are only roughly comparable"
            ) in out.splitlines()
    pruned = next(x for x in out.splitlines() if x.startswith("student-pruned")).split()
    assert pruned == ["student-pruned", "96.94%", "-", "-", "0.0450", "-", "-", "-", "48.00kB",
                      "-", "-"]


def test_missing_final_is_not_compared(tmp_path):
    a, b = build_report(tmp_path, samples=False), build_report(tmp_path, samples=False)
    b.final, b.status = None, "failed"
    res = compare_reports(a, b)
    assert res["final"]["checked"] is False and "regressed" not in res["final"]


def test_a_run_that_failed_before_a_final_model_is_refused(tmp_path, runs):
    a, _ = runs
    report = build_report(tmp_path / "f", samples=False)
    report.final, report.status = None, "failed"
    report.failure = Failure(reason="error", message="stage 02-export: ONNX parity failed")
    failed = save_run(tmp_path / "f", report)
    code, out, err = run_cli(a, failed)
    assert (code, out) == (2, "")  # it printed 'final None' and exited 0
    assert err == (f"error: {failed / 'report.json'}: the run failed (error: stage 02-export: ONNX "
                   "parity failed) before it had a final model; there is nothing to compare\n")


def test_missing_run_dir(tmp_path, runs):
    a, _ = runs
    code, out, err = run_cli(a, tmp_path / "nope", "--fail-on-regression")
    assert (code, out) == (2, "")
    assert err == f"error: {tmp_path / 'nope'}: no such run directory\n"


@pytest.mark.parametrize(("content", "message"), [
    (None, "{f}: not found (expected a run directory holding report.json)"),
    ("{not json", "{f}: not valid JSON (line 1: Expecting property name enclosed in double quotes)"),
    ('{"models": {}}', "{f}: missing key 'pipeline'"),
    ("[1, 2]", "{f}: expected a JSON object, got list"),
])
def test_bad_report_json(tmp_path, runs, content, message):
    a, _ = runs
    bad = tmp_path / "bad"
    bad.mkdir()
    if content is not None:
        (bad / "report.json").write_text(content)
    code, _, err = run_cli(bad, a)
    assert code == 2
    assert err == "error: " + message.format(f=bad / "report.json") + "\n"


def test_different_latency_settings_are_named(tmp_path):
    a, b = build_report(tmp_path, samples=False), build_report(tmp_path, samples=False)
    b.models[-1].threads = 4
    res = compare_reports(a, b)
    assert res["settings_differ"] == ["threads"] and res["machine_differences"] == []
    code, out, _ = run_cli(save_run(tmp_path / "a", a), save_run(tmp_path / "b", b))
    assert code == 0 and out.splitlines()[-1] == (
        "note: the final models were measured with different threads: the latency ratio mixes "
        "model and settings")


def test_commands_stay_light():
    """`compress compare` and the report modules import neither matplotlib nor numpy up front."""
    import subprocess
    import sys

    code = ("import sys, compress.report.cli, compress.report.compare, compress.report.html, "
            "compress.common.console; "
            "print(sorted(m for m in ('matplotlib', 'numpy', 'torch', 'onnxruntime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


ALL = {name: 1.0 for name, *_ in MODELS}


def test_a_machine_uniformly_slower_is_not_a_regression(tmp_path):
    """Every model of run B, the teacher included, 30% slower: the machine, not the model."""
    a = save_run(tmp_path / "a", build_report(tmp_path / "a", samples=False))
    b = save_run(tmp_path / "b", build_report(tmp_path / "b", scale={n: 1.3 for n in ALL},
                                              samples=False))
    code, out, err = run_cli(a, b, "--fail-on-regression")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert next(x for x in lines if x.startswith("student-int8")).split()[7:9] == ["1.30x", "1.00x"]
    assert lines[-3:] == [
        "speed: final p50 / teacher p50 0.0373 in A, 0.0373 in B: 1.00x; the same teacher file "
        "(sha256 abababababab) moved 1.30x between the runs",
        "final student-int8: accuracy +0.00 pp, p50 1.00x relative to the teacher (absolute 1.30x), "
        "size 1.00x: no regression",
        "settings: the same (config.resolved.yaml)"]


def test_final_slower_relative_to_the_same_teacher_is_a_regression(tmp_path):
    """Run B's machine 10% faster, its final model 20% slower relative to the teacher: 1.08x in
    absolute time, within the 10% tolerance, yet a regression."""
    a = save_run(tmp_path / "a", build_report(tmp_path / "a", samples=False))
    scale = {n: 0.9 for n in ALL} | {"student-int8": 0.9 * 1.2}
    b = save_run(tmp_path / "b", build_report(tmp_path / "b", scale=scale, samples=False))
    code, out, err = run_cli(a, b, "--fail-on-regression")
    assert code == 3
    assert err == ("error: regression of the final model: p50 1.20x run A's relative to the "
                   "teacher (tolerance 10%)\n")
    assert out.splitlines()[-3:] == [
        "speed: final p50 / teacher p50 0.0373 in A, 0.0448 in B: 1.20x; the same teacher file "
        "(sha256 abababababab) moved 0.90x between the runs",
        "final student-int8: accuracy +0.00 pp, p50 1.20x relative to the teacher (absolute 1.08x), "
        "size 1.00x: REGRESSED: p50 1.20x run A's relative to the teacher (tolerance 10%)",
        "settings: the same (config.resolved.yaml)"]


def test_different_teachers_fall_back_to_absolute_time_with_a_warning(tmp_path):
    a_report = build_report(tmp_path / "a", samples=False)
    b_report = build_report(tmp_path / "b", scale={n: 1.3 for n in ALL}, samples=False)
    b_report.teacher.sha256 = "cd" * 32
    res = compare_reports(a_report, b_report)
    assert res["final"]["speed"]["basis"] == "absolute"
    assert res["final"]["speed"]["ratio"] == pytest.approx(1.3)
    a, b = save_run(tmp_path / "a", a_report), save_run(tmp_path / "b", b_report)
    code, out, err = run_cli(a, b, "--fail-on-regression")
    assert (code, err) == (3, "error: regression of the final model: p50 1.30x run A's in "
                              "absolute time, the teachers differ (tolerance 10%)\n")
    lines = out.splitlines()
    assert next(x for x in lines if x.startswith("student-int8")).split()[7:9] == ["1.30x", "-"]
    assert lines[-3:-1] == [
        "warning: the runs' teachers differ (sha256 abababababab -> cdcdcdcdcdcd): the final "
        "model's p50 is compared in absolute time across runs, which machine load and drift "
        "move too",
        "final student-int8: accuracy +0.00 pp, p50 1.30x absolute, size 1.00x: REGRESSED: p50 "
        "1.30x run A's in absolute time, the teachers differ (tolerance 10%)"]


def test_the_settings_that_differ_are_listed(tmp_path):
    a = save_run(tmp_path / "a", build_report(tmp_path / "a", samples=False))
    b = save_run(tmp_path / "b", build_report(tmp_path / "b", samples=False),
                 ("seed=1", "stages[1].prune.macs=0.5", "target.runs=200",
                  "stages[0].distill.weight_decay=0.01"))
    code, out, _ = run_cli(a, b, "--json", tmp_path / "cmp.json")
    assert code == 0
    lines = out.splitlines()
    assert lines[lines.index(next(x for x in lines if x.startswith("settings:"))):] == [
        "settings: 4 keys differ (config.resolved.yaml, A -> B):",
        "  seed: 0 -> 1",
        "  target.runs: 300 -> 200",
        "  stages[1].prune.macs: 0.35 -> 0.5",
        "  stages[0].distill.weight_decay: (absent) -> 0.01"]  # run A's keys first, then B's own
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert data["config_differences"][0] == {"key": "seed", "a": "0", "b": "1"}


def test_a_run_without_its_settings_says_so(tmp_path):
    a = save_run(tmp_path / "a", build_report(tmp_path / "a", samples=False), None)
    b = save_run(tmp_path / "b", build_report(tmp_path / "b", samples=False))
    code, out, _ = run_cli(a / "report.json", b)
    assert code == 0
    assert out.splitlines()[-1] == ("note: run A has no config.resolved.yaml: the settings were "
                                    "not compared")


def test_unreadable_settings_are_refused(tmp_path):
    a = save_run(tmp_path / "a", build_report(tmp_path / "a", samples=False))
    b = save_run(tmp_path / "b", build_report(tmp_path / "b", samples=False))
    (b / "config.resolved.yaml").write_text("- just\n- a list\n")
    code, out, err = run_cli(a, b)
    assert (code, out) == (2, "")
    assert err == f"error: {b / 'config.resolved.yaml'}: expected a YAML mapping, got list\n"
    (b / "config.resolved.yaml").write_text("seed: [1\n")
    code, _, err = run_cli(a, b)
    assert code == 2 and err.startswith(f"error: {b / 'config.resolved.yaml'}: not valid YAML (line ")


def test_a_stage_list_that_differs_is_one_line_and_shared_stages_compare_by_kind(tmp_path):
    """Run B dropped the quantize stage and changed prune: prune is compared with prune, not
    export with quantize key by key."""
    import yaml

    a = save_run(tmp_path / "a", build_report(tmp_path / "a", samples=False))
    b = save_run(tmp_path / "b", build_report(tmp_path / "b", samples=False),
                 ("stages[1].prune.macs=0.5",))
    resolved = b / "config.resolved.yaml"
    raw = yaml.safe_load(resolved.read_text())
    raw["stages"] = [s for s in raw["stages"] if "quantize" not in s]  # as a run without it writes
    resolved.write_text(yaml.safe_dump(raw, sort_keys=False))
    code, out, _ = run_cli(a, b)
    assert code == 0
    lines = out.splitlines()
    assert lines[lines.index(next(x for x in lines if x.startswith("settings:"))):] == [
        "settings: 2 keys differ (config.resolved.yaml, A -> B):",
        '  stages: ["distill", "prune", "export", "quantize", "benchmark", "package"] -> '
        '["distill", "prune", "export", "benchmark", "package"]',
        "  stages[1].prune.macs: 0.35 -> 0.5"]
