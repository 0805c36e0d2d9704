"""A stage's folder in the run directory: written in a temp folder and swapped in whole, with a
``stage.json`` record (key, config, hashes of the model and of every file) that resume reads."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.artifacts import ModelArtifact, StageResult, load_torch
from compress.common.env import versions
from compress.common.files import read_json, sha256_file, write_json
from compress.errors import CompressError


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

    def record(self) -> dict | None:
        return read_json(self.final / "stage.json")

    def commit(self, result: StageResult, record: dict[str, Any], model: ModelArtifact | None) -> None:
        """Write ``stage.json`` into the temp folder, then swap it in for the old folder."""
        tmp, final = self.tmp, self.final
        for art in [result.model, *result.publish]:
            if art.path is not None and tmp in Path(art.path).parents:
                art.path = final / Path(art.path).relative_to(tmp)
        write_json(tmp / "stage.json", {
            **record, "status": "done", "input_sha256": model.sha256 if model else None,
            "output": _art_record(result.model, final),
            "published": [_art_record(p, final) for p in result.publish],
            "files": {f: sha256_file(tmp / f) for f in result.files},
            "measurements": [m.as_dict() for m in result.measurements],
            "metrics": result.metrics, "versions": versions(),
        })
        old = self.run_dir / f".{self.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, record: dict, given: ModelArtifact | None, info) -> tuple | None:
        """``(model, published)`` from a record whose every file still hashes as recorded."""
        folder = self.final
        files = record.get("files", {})
        if any(not (folder / f).is_file() or sha256_file(folder / f) != h for f, h in files.items()):
            return None
        try:
            out = _load_art(record["output"], folder, given, info)
            pubs = [_load_art(p, folder, given, info) for p in record.get("published", [])]
        except (OSError, KeyError, ValueError, CompressError):
            return None
        return None if out is None or any(p is None for p in pubs) else (out, pubs)


def _load_art(rec: dict, folder: Path, given: ModelArtifact | None, info) -> ModelArtifact | None:
    if rec["format"] == "passthrough":
        return given
    path = folder / rec["path"]
    if not path.exists() or sha256_file(path) != rec["sha256"]:
        return None
    if rec["format"] == "torch":
        return load_torch(path.parent, info.input_shape[0] if info.input_shape else None,
                          info.num_classes)
    return ModelArtifact(rec["name"], "onnx", path=path, sha256=rec["sha256"],
                         precision=rec.get("precision", "fp32"), meta=rec.get("meta", {}))


def _art_record(art: ModelArtifact, folder: Path) -> dict:
    if art.path is None or folder not in Path(art.path).parents:
        # the stage passed its input on unchanged (e.g. benchmark): point at the earlier file
        return {"format": "passthrough", "name": art.name}
    return {"format": art.format, "name": art.name, "path": str(Path(art.path).relative_to(folder)),
            "sha256": art.sha256, "precision": art.precision, "meta": art.meta}
