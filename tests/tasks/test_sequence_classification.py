"""The sequence-classification task: its losses against values worked out by hand, padding, the
teacher's head in the spec, ONNX parity of an exported classifier, and the layer-drop copy of a
fine-tuned classifier (weights equal, head included)."""

from __future__ import annotations

import math

import pytest
import torch

from compress.config.train import SoftTargets
from compress.models.hf import ClassifierOutput, SequenceClassifier, layer_drop_student
from compress.tasks.sequence_classification import LayerwiseSequenceTask, SequenceClassificationTask

TASK = SequenceClassificationTask()


def _tiny_classifier(layers: int = 4, labels: int = 3, seed: int = 0) -> SequenceClassifier:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=2048,  # export traces ids in 1000..1999
                     hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    return SequenceClassifier(BertModel(cfg), labels).eval()


def _out(logits, hidden):
    return ClassifierOutput(torch.tensor(logits), tuple(torch.as_tensor(h) for h in hidden), None)


def test_layerwise_loss_is_soft_targets_plus_hidden_mse_by_hand():
    task = LayerwiseSequenceTask(TASK, [1], hidden=0.5)
    mask = torch.tensor([[1, 1, 0]])
    # student layer 0 vs teacher layer 1: zeros vs twos on the two unmasked tokens -> MSE 4
    s = _out([[0.0, 0.0]], [torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)])
    t = _out([[0.0, 0.0]], [torch.zeros(1, 3, 4), torch.ones(1, 3, 4), torch.full((1, 3, 4), 2.0)])
    kd = SoftTargets(temperature=2.0, alpha=0.25)
    # identical logits: KL 0; unlabeled: the soft term alone -> 0.5 * 4
    assert task.distill_loss((s, mask), (t, mask), torch.tensor([-1]), kd).item() == pytest.approx(2.0)
    # labeled: (1 - alpha) * CE of uniform logits over 2 classes = 0.75 * ln 2, plus 2.0
    got = task.distill_loss((s, mask), (t, mask), torch.tensor([1]), kd).item()
    assert got == pytest.approx(0.75 * math.log(2) + 2.0, rel=1e-6)


def test_plain_loss_is_cross_entropy_without_unlabeled_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    want = math.log(1 + math.exp(-2.0))  # CE of the first row; the second is unlabeled
    assert TASK.loss(logits, torch.tensor([0, -1])).item() == pytest.approx(want, rel=1e-6)


def test_collate_pads_and_arrays_take_a_fixed_length():
    items = [({"input_ids": torch.tensor([101, 7, 102]), "attention_mask": torch.ones(3, dtype=torch.long)}, 1),
             ({"input_ids": torch.tensor([101, 102]), "attention_mask": torch.ones(2, dtype=torch.long)}, 0)]
    inputs, y = TASK.collate(items)
    assert inputs["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]] and y.tolist() == [1, 0]
    feeds, labels = TASK.arrays(items, seq_len=5)
    assert feeds["input_ids"].shape == (2, 5) and labels.tolist() == [1, 0]


def test_the_teacher_spec_gets_a_head_for_the_data_classes():
    assert TASK.model_spec({"hf": "some/dir"}, 2) == {"hf": "some/dir", "num_labels": 2}
    assert TASK.model_spec({"python": "pkg.mod:fn"}, 2) == {"python": "pkg.mod:fn"}


def test_layer_drop_copy_of_a_fine_tuned_classifier_keeps_its_weights():
    teacher = _tiny_classifier(layers=4)
    with torch.no_grad():  # 'fine-tuned': the head and a kept layer moved away from their init
        teacher.classifier.weight.add_(1.0)
        teacher.encoder.encoder.layer[3].output.dense.bias.add_(0.5)
    for p in teacher.parameters():
        p.requires_grad_(False)  # frozen, as distillation leaves a teacher
    student = layer_drop_student(teacher, [0, 3])
    t, s = teacher.state_dict(), student.state_dict()
    assert len(student.encoder.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    for key, value in s.items():
        if ".encoder.layer." in key:
            i = int(key.split(".encoder.layer.")[1].split(".")[0])
            src = key.replace(f".encoder.layer.{i}.", f".encoder.layer.{[0, 3][i]}.")
        else:
            src = key
        assert torch.equal(value, t[src]), key
    assert {k for k in s if ".encoder.layer." not in k} == {k for k in t if ".encoder.layer." not in k}
    assert all(p.requires_grad for p in student.parameters())
    with torch.no_grad():
        student.classifier.bias.add_(1.0)  # a copy: the teacher does not move with it
    assert not torch.equal(student.classifier.bias, teacher.classifier.bias)


def test_exported_classifier_matches_pytorch_in_onnx_runtime(tmp_path):
    from compress.config.stages import ExportConfig
    from compress.export.checked import export_checked

    model = _tiny_classifier(layers=2, labels=3)
    g = torch.Generator().manual_seed(1)
    ds = [({"input_ids": torch.randint(1, 100, (n,), generator=g),
            "attention_mask": torch.ones(n, dtype=torch.long)}, n % 3) for n in (5, 9, 3, 12)]
    path = tmp_path / "m.onnx"
    cfg = ExportConfig(exporter="torchscript", dynamic_batch=True, parity_samples=4)
    parity = export_checked(model, TASK, TASK.example(ds, 2), path, cfg, ds)
    assert parity.ok and parity.samples == 4
    assert parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0 and parity.cosine_min is None
    import onnx

    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask"]
