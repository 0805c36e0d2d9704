"""`compress validate`, `compress schema` and `--help` read configs without importing torch or
any stage implementation (a fresh interpreter, so nothing imported by other tests counts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _util import ROOT

HEAVY = ("torch", "torch_pruning", "onnxruntime", "transformers", "optimum", "matplotlib")
PROBE = """
import sys
from compress.cli import cli
try:
    cli({args!r}, prog_name="compress")
except SystemExit as e:
    code = e.code
print("HEAVY=" + ",".join(sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))))
print("CODE=" + str(code))
"""


@pytest.mark.parametrize("args", [["validate", "pipelines/mobile.yaml"], ["schema"], ["--help"]])
def test_config_commands_never_import_torch(args):
    probe = PROBE.format(args=args, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and
                 line.split("=", 1)[0] in ("HEAVY", "CODE"))
    assert lines["CODE"] in ("0", "None"), out.stderr
    assert lines["HEAVY"] == "", f"{args} imported {lines['HEAVY']}"


def test_schema_lists_target_and_task():
    out = subprocess.run([sys.executable, "-m", "compress.cli", "schema"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    props = json.loads(out.stdout)["properties"]
    assert {"target", "task", "stages"} <= set(props)
