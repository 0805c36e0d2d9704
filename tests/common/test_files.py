"""One JSON default for the files the package writes and the console's event log."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from compress.common.files import json_default, read_json, write_json


def test_files_and_the_log_share_one_json_default(tmp_path):
    obj = {"n": np.int64(3), "x": np.float32(0.5), "p": Path("a/b"), "t": (1, 2)}
    write_json(tmp_path / "o.json", obj)
    assert read_json(tmp_path / "o.json") == {"n": 3, "x": 0.5, "p": "a/b", "t": [1, 2]}
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        json.dumps({"o": object()}, default=json_default)
    line = json.dumps({"o": 1j}, default=partial(json_default, strict=False))
    assert line == '{"o": "1j"}'
