"""Finished stages shared across the runs of one search, by the engine's own resume key.

Each trial is an ordinary run in its own folder (``search/trial-NNNN/``). Before a step runs, the
store looks for a finished folder of the same step name and resume key (the key covers the kind,
the config, the input and teacher hashes, the data and the seed) and hard-links it into the
trial's run folder, where the engine's resume finds it and skips the step; a step the trial
finished is put back into the store. So the teacher is trained once, and a distilled student is
reused by every trial that changes only later stages.

Files in stage folders are written once (temp file + rename) and never changed in place, which is
what makes hard links safe; ``put`` and ``fetch`` publish whole folders by rename, so two workers
never see half a folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from compress.artifacts import ModelArtifact
from compress.common.files import read_json
from compress.engine.run import Engine, Step

# Stages whose folder holds everything they produced. package writes RUN_DIR/bundle beside its
# folder and benchmark measures on the test split: both run in the chosen trial's run only.
SHARED_KINDS = ("teacher", "distill", "prune", "export", "quantize")


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy holds the same bytes
        shutil.copy2(src, dst)


class StageStore:
    """A folder of finished stage folders, named by a hash of (step name, resume key)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.hits = 0

    def _dir(self, name: str, key: str) -> Path:
        return self.root / hashlib.sha256(f"{name}\0{key}".encode()).hexdigest()[:32]

    def has(self, name: str, key: str) -> bool:
        return (self._dir(name, key) / "stage.json").is_file()

    def fetch(self, name: str, key: str, folder: Path) -> bool:
        """Link the stored folder into ``folder`` unless it already holds this finished step."""
        record = read_json(folder / "stage.json")
        if isinstance(record, dict) and record.get("key") == key and record.get("status") == "done":
            return False
        src = self._dir(name, key)
        if not (src / "stage.json").is_file():
            return False
        tmp = folder.with_name(f".{folder.name}.fetch-{uuid.uuid4().hex[:8]}")
        shutil.copytree(src, tmp, copy_function=link_or_copy)
        old = folder.with_name(f".{folder.name}.replaced-{uuid.uuid4().hex[:8]}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        self.hits += 1
        return True

    def put(self, name: str, key: str, folder: Path) -> None:
        """Publish a finished step's folder (a no-op when the store has it)."""
        dst = self._dir(name, key)
        record = read_json(folder / "stage.json")
        if dst.exists() or not (isinstance(record, dict) and record.get("key") == key):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        shutil.copytree(folder, tmp, copy_function=link_or_copy)
        try:
            tmp.rename(dst)
        except OSError:  # another worker published the same step first
            shutil.rmtree(tmp, ignore_errors=True)


class SharedEngine(Engine):
    """The engine, with the shareable steps looked up in (and given back to) a ``StageStore``.

    It also keeps the last step's model and the published models, which a trial measures."""

    def __init__(self, *args, store: StageStore, **kwargs):
        super().__init__(*args, **kwargs)
        self.store = store
        self.teacher_outputs = store.root.parent / "cache" / "teacher"
        self.final_model: ModelArtifact | None = None
        self.published: dict[str, ModelArtifact] = {}
        self.ran: list[str] = []  # the steps this run executed (not fetched, not resumed)

    def _step(self, step: Step, model: ModelArtifact | None, teacher: ModelArtifact | None,
              published: dict[str, ModelArtifact]) -> ModelArtifact:
        shared = step.kind in SHARED_KINDS and self.world.main
        folder = self.run_dir / step.name
        key = self._key(step) if shared else ""
        if shared:
            self.store.fetch(step.name, key, folder)
        before = len(self.records)
        out = super()._step(step, model, teacher, published)
        if self.records[before:] and self.records[-1].status == "done":
            self.ran.append(step.name)
            if shared:
                self.store.put(step.name, key, folder)
        self.final_model, self.published = out, published
        return out

    def _scope(self, ctx, key: str):
        """The teacher's cached outputs (keyed by teacher, data and preprocessing) shared by every
        trial, instead of one copy per trial folder."""
        return dataclasses.replace(super()._scope(ctx, key), cache_dir=self.teacher_outputs)
