"""The app notes agree with a bundle the pipeline wrote: deploy/*.md (hand-written for the
demo's bundle) and the notes generated into every bundle (README.md, APP.md)."""

from __future__ import annotations

import json
import re

import pytest

from compress.bundle.deploy import load_target
from compress.bundle.notes import app_notes, preprocessing_lines
from tests.bundle.conftest import ROOT


def _facts(bundle) -> dict:
    m = json.loads((bundle / "manifest.json").read_text())
    pre = json.loads((bundle / "preprocess.json").read_text())
    return {"input": m["io"]["inputs"][0]["name"], "output": m["io"]["outputs"][0]["name"],
            "shape": m["io"]["inputs"][0]["shape"], "pre": pre}


@pytest.mark.parametrize("doc,target,name_re,shape_re,threads_re", [
    ("ANDROID.md", "android", r'mapOf\("(\w+)" to input\)', r"longArrayOf\(([\d, ]+)\)",
     r"setIntraOpNumThreads\((\d+)\)"),
    ("IOS.md", "ios", r'withInputs: \["(\w+)": input\]', r"shape: \[([\d, ]+)\]",
     r"setIntraOpNumThreads\((\d+)\)"),
])
def test_deploy_docs_match_the_demo_bundle(pipeline_bundle, doc, target, name_re, shape_re,
                                           threads_re):
    """The demo's data (digits at 32) bundled by a real run: the names, shape, scale and threads
    the doc's snippet types are the bundle's and the target profile's."""
    text = (ROOT / "deploy" / doc).read_text()
    f = _facts(pipeline_bundle)
    assert set(re.findall(name_re, text)) == {f["input"]}
    assert [[int(d) for d in s.split(",")] for s in re.findall(shape_re, text)] == [f["shape"]]
    assert set(int(t) for t in re.findall(threads_re, text)) == {load_target(target).threads} \
        == {1}
    pre = f["pre"]
    assert (pre["scale"], pre["mean"], pre["std"], pre["invert"]) == (1 / 255, [0.5], [0.5], "auto")
    assert "1/255 - 0.5) / 0.5" in text and "/ 255 - mean" not in text and '"image"' not in text
    if doc == "IOS.md":
        assert f'outputNames: ["{f["output"]}"]' in text


def test_bundle_readme_holds_the_generated_notes(pipeline_bundle):
    readme = (pipeline_bundle / "README.md").read_text()
    f = _facts(pipeline_bundle)
    for line in preprocessing_lines(f["pre"]):
        assert line in readme
    assert f'session.run(mapOf("{f["input"]}" to input))' in readme
    assert "longArrayOf(1, 1, 32, 32)" in readme and "setIntraOpNumThreads(1)" in readme
    # the phone snippets open the ORT-format file the bundle ships, as deploy/ANDROID.md does
    opened = re.findall(r'assets\.open\("([^"]+)"\)', readme)
    assert opened == ["model.ort"] and (pipeline_bundle / "model.ort").is_file()
    android = (ROOT / "deploy" / "ANDROID.md").read_text()
    assert re.findall(r'assets\.open\("([^"]+)"\)', android) == opened


def test_no_shipped_file_points_at_a_document_outside_the_repo():
    """FACTS.md lives beside the repo, not in it: a user reading a shipped file cannot open it."""
    shipped = [*(ROOT / "deploy").glob("*.md"), *(ROOT / "compress" / "bundle" / "profiles").glob("*.yaml")]
    assert shipped and [p.name for p in shipped if "FACTS" in p.read_text()] == []


def test_text_notes_say_how_sentences_are_padded():
    pre = {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 128, "padding": "longest"}
    io = {"inputs": [{"name": "input_ids", "shape": [1, "seq"], "dtype": "int64"},
                     {"name": "attention_mask", "shape": [1, "seq"], "dtype": "int64"}],
          "outputs": [{"name": "sentence_embedding", "shape": [1, 384], "dtype": "float32"}]}
    rt = {"model": "model.ort", "threads": 1, "opt_level": "basic",
          "providers": ["CPUExecutionProvider"]}
    notes = app_notes(io, pre, rt, "android")
    assert "truncate to 128 tokens, no padding (one sentence per call)" in notes
    assert "kotlin" not in notes  # the image snippet does not pretend to fit a text model
    assert "padded to 128" in app_notes(io, {**pre, "padding": "max_length"}, rt)
