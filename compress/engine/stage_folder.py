"""A stage's folder in the run directory: written in a temp folder and swapped in whole, with a
``stage.json`` record (key, config, hashes of the model and of every file) that resume reads.
A record that resume refuses says why on the console: unreadable, another key, a file changed."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.artifacts import ModelArtifact, StageResult, load_torch
from compress.common.console import current
from compress.common.env import versions
from compress.common.files import sha256_file
from compress.errors import CompressError, InputError
from compress.records import ArtifactRecord, StageRecord


class Refused(Exception):
    """Why a stage record cannot be resumed (the message completes "not resumed: ...")."""


@dataclass
class Resumed:
    """A finished stage taken from its folder instead of being run again."""

    record: StageRecord
    model: ModelArtifact
    published: list[ModelArtifact]


def swap_in(src: Path, final: Path) -> None:
    """Replace the folder ``final`` (when there is one) by ``src``, by renames: a reader sees
    the old folder or the new one, never half of either. The one way a step folder changes."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    src.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class StageFolder:
    run_dir: Path
    name: str  # e.g. "02-prune"

    @property
    def final(self) -> Path:
        return self.run_dir / self.name

    @property
    def tmp(self) -> Path:
        return self.run_dir / f".{self.name}.tmp"

    def fresh_tmp(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def record(self) -> StageRecord | None:
        """The folder's stage.json; None when there is none or it is not a finished record."""
        try:
            return StageRecord.load(self.final / "stage.json")
        except InputError:
            return None

    def commit(self, result: StageResult, record: dict[str, Any], model: ModelArtifact | None) -> None:
        """Write ``stage.json`` into the temp folder, then swap it in for the old folder.
        ``record``: the engine's part (name, kind, key, seconds, device, config)."""
        tmp, final = self.tmp, self.final
        for art in [result.model, *result.publish]:
            if art.path is not None and tmp in Path(art.path).parents:
                art.path = final / Path(art.path).relative_to(tmp)
        StageRecord(
            **record, status="done", input_sha256=model.sha256 if model else None,
            output=_art_record(result.model, final),
            published=[_art_record(p, final) for p in result.publish],
            files={f: sha256_file(tmp / f) for f in result.files},
            measurements=result.measurements, metrics=result.metrics, versions=versions(),
        ).dump(tmp / "stage.json")
        swap_in(tmp, final)

    def resume(self, key: str, given: ModelArtifact | None, info) -> Resumed | None:
        """The outputs recorded under ``key``. None when there is no record, or, with one line on
        the console saying why, when the record is unreadable, was written under another key, or
        a file it lists no longer hashes as recorded."""
        if not (self.final / "stage.json").exists():
            return None
        try:
            record = self._readable()
            if record.key != key:
                raise Refused("its resume key changed (the config, an input model, the data or the "
                              "device differ from the recorded run)")
            model, published = self._load(record, given, info)
        except Refused as why:
            current().info(f"[{self.name}] not resumed: {why}; running it again")
            current().event("resume_refused", stage=self.name, reason=str(why))
            return None
        return Resumed(record, model, published)

    def load(self, record: StageRecord | None, given: ModelArtifact | None, info) -> tuple | None:
        """``(model, published)`` from a record whose every file still hashes as recorded."""
        if record is None:
            return None
        try:
            return self._load(record, given, info)
        except Refused:
            return None

    def _readable(self) -> StageRecord:
        path = self.final / "stage.json"
        try:
            return StageRecord.load(path)
        except InputError as e:  # the message names the file, then the key: keep the key
            raise Refused(f"stage.json is unreadable ({str(e).removeprefix(f'{path}: ')})") from None

    def _load(self, record: StageRecord, given: ModelArtifact | None, info) -> tuple:
        folder = self.final
        for f, h in record.files.items():
            if not (folder / f).is_file():
                raise Refused(f"{f} is missing from {folder}")
            if sha256_file(folder / f) != h:
                raise Refused(f"{f} changed since it was recorded (its sha256 differs)")
        try:
            out = _load_art(record.output, folder, given, info)
            pubs = [_load_art(p, folder, given, info) for p in record.published]
        except (OSError, ValueError, CompressError) as e:
            raise Refused(f"stage.json is unreadable ({type(e).__name__}: {e})") from e
        return out, pubs


def _load_art(rec: ArtifactRecord, folder: Path, given: ModelArtifact | None, info) -> ModelArtifact:
    if rec.format == "passthrough":
        if given is None:
            raise Refused("it passed on its input model, and there is none here")
        return given
    if rec.path is None or rec.sha256 is None:
        raise Refused(f"stage.json is unreadable (its {rec.name} {rec.format} model has no path "
                      "or sha256)")
    path = folder / rec.path
    if not path.exists():
        raise Refused(f"{rec.path} is missing from {folder}")
    if sha256_file(path) != rec.sha256:
        raise Refused(f"{rec.path} changed since it was recorded (its sha256 differs)")
    if rec.format == "torch":
        return load_torch(path.parent, info.input_shape[0] if info.input_shape else None,
                          info.num_classes)
    return ModelArtifact(rec.name, "onnx", path=path, sha256=rec.sha256,
                         precision=rec.precision or "fp32", meta=rec.meta or {})


def _art_record(art: ModelArtifact, folder: Path) -> ArtifactRecord:
    if art.path is None or folder not in Path(art.path).parents:
        # the stage passed its input on unchanged (e.g. benchmark): point at the earlier file
        return ArtifactRecord(format="passthrough", name=art.name)
    return ArtifactRecord(format=art.format, name=art.name,
                          path=str(Path(art.path).relative_to(folder)), sha256=art.sha256,
                          precision=art.precision, meta=art.meta)
