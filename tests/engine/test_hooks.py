"""The engine's hooks, which the search composes instead of subclassing the engine: step stores
(finished steps kept outside the run folder, by resume key) and the training scope's on_epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _util import tiny_config

from compress.config.pipeline import PipelineConfig
from compress.engine.run import Engine
from compress.engine.stage_folder import swap_in
from compress.engine.step_cache import FolderStore, StepStore, finished, search_store
from compress.train.checkpoint import EpochMetrics


class Shelf:
    """A StepStore written here from the protocol alone: it serves two kinds, keeps plain
    copies and remembers every call."""

    label = "the shelf"

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def serves(self, kind: str) -> bool:
        return kind in ("teacher", "distill")

    def where(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key[:12]}"

    def fetch(self, name: str, key: str, dest: Path) -> bool:
        self.calls.append(("fetch", name))
        if not finished(self.where(name, key), key):
            return False
        shutil.rmtree(dest)
        shutil.copytree(self.where(name, key), dest)
        return True

    def put(self, name: str, key: str, folder: Path) -> None:
        self.calls.append(("put", name))
        shutil.copytree(folder, self.where(name, key), dirs_exist_ok=True)


def _config() -> tuple[PipelineConfig, dict]:
    raw = tiny_config()
    raw["stages"] = [{"distill": {"epochs": 2, "lr": 0.01}}, {"export": {"opset": 18}}]
    return PipelineConfig.model_validate(raw), raw


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    """A run with a shelf and an epoch listener, then a second run dir served by the shelf."""
    folder = tmp_path_factory.mktemp("hooks")
    cfg, raw = _config()
    shelf, epochs = Shelf(folder / "shelf"), []
    first = Engine(cfg, raw, folder / "a", "cpu", progress=False, log=lambda m: None,
                   cache_dir=False, stores=[shelf], on_epoch=epochs.append)
    first.run()
    lines: list[str] = []
    second = Engine(cfg, raw, folder / "b", "cpu", progress=False, log=lines.append,
                    cache_dir=False, stores=[shelf], on_epoch=epochs.append)
    second.run()
    return folder, shelf, epochs, first, second, lines


def test_a_shelf_is_a_step_store_and_the_folder_store_too():
    store = search_store(Path("s"))
    assert isinstance(Shelf(Path(".")), StepStore) and isinstance(store, StepStore)
    assert [store.serves(k) for k in ("teacher", "distill", "benchmark", "package")] == \
        [True, True, False, False]


def test_on_epoch_gets_every_epoch_of_every_loop_with_its_step(hooked):
    folder, _, epochs, *_ = hooked
    assert [(m.stage, m.kind, m.loop, m.epoch, m.epochs) for m in epochs] == [
        ("00-teacher", "teacher", "teacher", 1, 3), ("00-teacher", "teacher", "teacher", 2, 3),
        ("00-teacher", "teacher", "teacher", 3, 3),
        ("01-distill", "distill", "distill", 1, 2), ("01-distill", "distill", "distill", 2, 2)]
    assert {(m.metric, m.higher_is_better) for m in epochs} == {("accuracy", True)}
    # the values are the ones the stage recorded in its history, to the last bit
    history = json.loads((folder / "a" / "01-distill" / "stage.json").read_text())["metrics"]["history"]
    assert [(m.loss, m.value) for m in epochs[3:]] == [(h["loss"], h["val_accuracy"]) for h in history]


def test_the_stores_serve_the_steps_of_their_kinds_to_another_run(hooked):
    folder, shelf, _, first, second, lines = hooked
    # the first run looked up and then put back each step the shelf serves; the second fetched them
    assert shelf.calls == [("fetch", "00-teacher"), ("put", "00-teacher"), ("fetch", "01-distill"),
                           ("put", "01-distill"), ("fetch", "00-teacher"), ("fetch", "01-distill")]
    assert first.ran == ["00-teacher", "01-distill", "02-export"] and second.ran == ["02-export"]
    key = json.loads((folder / "a" / "00-teacher" / "stage.json").read_text())["key"]
    assert lines[0].startswith(f"[00-teacher] reused from the shelf {shelf.where('00-teacher', key)} "
                               "(same teacher, data, seed and device; it took ")
    assert lines[1].startswith("[01-distill] reused from the shelf ")
    for f in ("00-teacher/model.onnx", "01-distill/model.safetensors", "02-export/model.onnx"):
        assert (folder / "b" / f).read_bytes() == (folder / "a" / f).read_bytes()
    assert second.final_model.sha256 == first.final_model.sha256
    assert sorted(second.published) == sorted(first.published) and "teacher" in first.published


def test_the_search_store_links_and_a_fetch_swaps_the_whole_folder(hooked, tmp_path):
    folder, *_ = hooked
    step = folder / "a" / "01-distill"
    key = json.loads((step / "stage.json").read_text())["key"]
    store = search_store(tmp_path / "store")
    store.put("01-distill", key, step)
    store.put("01-distill", key, step)  # kept once
    kept = store.where("01-distill", key)
    assert [p.name for p in (tmp_path / "store").iterdir()] == [kept.name]
    assert (kept / "model.safetensors").stat().st_ino == (step / "model.safetensors").stat().st_ino
    final, dest = tmp_path / "run" / "01-distill", tmp_path / "run" / ".01-distill.tmp"
    final.mkdir(parents=True)
    (final / "stale.txt").write_text("from an older run")
    dest.mkdir()
    assert store.fetch("01-distill", "0" * 64, dest) is False and store.hits == 0
    assert store.fetch("01-distill", key, dest) is True and store.hits == 1
    swap_in(dest, final)
    assert sorted(p.name for p in final.iterdir()) == sorted(p.name for p in step.iterdir())
    assert sorted(p.name for p in final.parent.iterdir()) == ["01-distill"]  # no .old, no .tmp


def test_a_step_of_another_key_is_never_put_or_fetched(hooked, tmp_path):
    folder, *_ = hooked
    step = folder / "a" / "00-teacher"
    cache = FolderStore(tmp_path / "steps", ("teacher",), "the cache")
    cache.put("00-teacher", "f" * 64, step)  # the folder holds another key's step
    assert not (tmp_path / "steps").exists()


def test_epoch_metrics_are_frozen():
    m = EpochMetrics("distill", 1, 2, 0.5, "accuracy", 0.9)
    with pytest.raises(AttributeError):
        m.value = 1.0  # type: ignore[misc]
