"""The user's own input and output names, kept for the model that ships.

Inside a run every model takes and gives the task's names (``input``, ``logits``, ...): the
teacher I/O adapter renames a brought ONNX teacher once, and every stage, loss and parity check
reads those. The adapter also stamps the user's names into the teacher's metadata; the package
stage gives them back to the final model, so an app written against the user's model
(``image`` -> ``scores``) runs the bundle unchanged. A pooled output (an encoder's hidden states
made a sentence embedding) is a new output and keeps the task's name. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from compress.export.teacher_io import USER_IO, rename_all_


@dataclass(frozen=True)
class UserNames:
    """Task name -> the user's name, for the inputs and outputs the user named otherwise."""

    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.inputs or self.outputs)


def user_names(teacher: Path) -> UserNames:
    """The user's names stamped into a rewritten teacher (empty: none, or not an ONNX file)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(teacher), load_external_data=False)
    except (DecodeError, OSError, ValueError):
        return UserNames()
    raw = next((p.value for p in proto.metadata_props if p.key == USER_IO), None)
    if raw is None:
        return UserNames()
    got = json.loads(raw)
    return UserNames(dict(got.get("inputs", {})), dict(got.get("outputs", {})))


def with_user_names(src: Path, dst: Path, names: UserNames) -> Path:
    """A copy of ``src`` at ``dst`` that takes and gives the user's names (atomic write)."""
    import onnx

    from compress.common.files import atomic_write

    proto = onnx.load(str(src))
    have = {v.name for v in (*proto.graph.input, *proto.graph.output)}
    moves = {user: task for task, user in {**names.inputs, **names.outputs}.items() if task in have}
    rename_all_(proto.graph, moves)
    atomic_write(dst, lambda p: onnx.save_model(proto, str(p)))
    onnx.checker.check_model(str(dst))
    return dst
