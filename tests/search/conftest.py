"""A tiny search over the tiny pipeline of tests/_util.py: seconds per trial on digits."""

from __future__ import annotations

import copy

import pytest
import yaml
from _util import tiny_config


def tiny_search(tmp_path, search: dict, name: str = "search.yaml", **pipeline):
    cfg = tiny_config()
    cfg["name"] = "tiny-search"
    cfg["teacher"]["train"]["epochs"] = 2
    cfg["stages"][0]["distill"]["epochs"] = 2
    cfg.update(pipeline)
    cfg["search"] = copy.deepcopy(search)
    cfg["search"].setdefault("confirm", {"seeds": 0})  # confirming has tests of its own
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def make_search(tmp_path):
    return lambda search, **kw: tiny_search(tmp_path, search, **kw)
