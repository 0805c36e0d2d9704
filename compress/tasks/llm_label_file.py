"""The label file an llm teacher leaves in its folder (``labels.npz``), written and read in one
place: per distinct text its sha256, the raw verbaliser log-probs and the label log-probs as
configured (calibrated or not) in the student's label order, plus the test prompts' token ids
(ragged: ``test_ids`` and ``test_offsets``) that the benchmark times and scores the LLM on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.common.files import atomic_write
from compress.errors import InputError
from compress.tasks.llm_labels import _sha

LABELS_FILE = "labels.npz"


def _ragged(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    return np.asarray([i for r in rows for i in r], dtype=np.int64), offsets


def _unragged(flat: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [flat[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


def write_labels(path: Path, texts: list[str], raw: np.ndarray, dist: np.ndarray,
                 order: list[str], test_ids: list[list[int]], calibrate: bool = True,
                 content_free_ids: list[list[int]] | None = None,
                 columns: list[int] | None = None) -> None:
    """Write ``labels.npz`` atomically (``content_free_ids``: the calibration prompts, which the
    benchmark runs through each ONNX copy of the LLM for that copy's own prior; ``columns``: the
    scorer's output column of each label here, as the scorer answers in verbaliser order)."""
    test_flat, test_offsets = _ragged(test_ids)
    cf_flat, cf_offsets = _ragged(content_free_ids or [])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, text_sha256=np.array([_sha(t) for t in texts]), raw=raw.astype(np.float32),
                     logprobs=dist.astype(np.float32), labels=np.array(order),
                     test_ids=test_flat, test_offsets=test_offsets, calibrate=np.array(calibrate),
                     cf_ids=cf_flat, cf_offsets=cf_offsets,
                     columns=np.asarray(columns if columns is not None else range(len(order))))

    atomic_write(path, write)


# -- reading --------------------------------------------------------------


@dataclass
class LabelFile:
    """``labels.npz`` read back: label log-probs by text sha256, the order, the test prompts."""

    labels: list[str]
    rows: dict[str, int]  # text sha256 -> row
    raw: np.ndarray
    logprobs: np.ndarray
    test_prompts: list[list[int]]
    calibrate: bool = True
    content_free_prompts: list[list[int]] | None = None
    columns: list[int] | None = None  # the scorer's output column of each label

    def of(self, texts: list[str], raw: bool = False) -> np.ndarray:
        """``[n, labels]`` log-probs of ``texts`` (each must have been labelled)."""
        table = self.raw if raw else self.logprobs
        try:
            return table[[self.rows[_sha(t)] for t in texts]]
        except KeyError:
            raise InputError("the llm teacher's labels.npz lacks a text of this data; the teacher "
                             "step must run again (--no-resume)") from None


def read_labels(path: Path) -> LabelFile:
    with np.load(path, allow_pickle=False) as z:
        return LabelFile([str(x) for x in z["labels"]],
                         {s: i for i, s in enumerate(z["text_sha256"].tolist())},
                         z["raw"], z["logprobs"], _unragged(z["test_ids"], z["test_offsets"]),
                         bool(z["calibrate"]), _unragged(z["cf_ids"], z["cf_offsets"]),
                         z["columns"].tolist())


def is_llm(artifact) -> bool:
    """Whether a model artifact is an llm teacher's scorer (or its int8)."""
    return bool(artifact is not None and artifact.meta.get("llm_labels"))


def labels_path(artifact) -> Path:
    return Path(artifact.path).parent / artifact.meta["llm_labels"]


