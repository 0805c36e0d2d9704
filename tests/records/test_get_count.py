"""Records cross rooms typed: report/, search/ and engine/ read fields, not string keys. The
count of ``.get("...")`` reads on string keys there (215 before the records) stays under 20."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "compress"
GET = re.compile(r'\.get\("[a-z_0-9]*"')  # what `grep -o '\.get("[a-z_0-9]*"'` counts


def string_key_gets(*rooms: str) -> dict[str, int]:
    counts = {}
    for room in rooms:
        for path in sorted((ROOT / room).rglob("*.py")):
            n = len(GET.findall(path.read_text(encoding="utf-8")))
            if n:
                counts[str(path.relative_to(ROOT.parent))] = n
    return counts


def test_string_key_reads_stay_under_twenty():
    counts = string_key_gets("report", "search", "engine")
    assert sum(counts.values()) < 20, counts


def test_the_counter_counts_what_grep_counts(tmp_path):
    text = 'a.get("key") b.get("val_2", 0) c.get(k) d.get("Upper") e["x"] f.get("x").get("y")'
    assert len(GET.findall(text)) == 4
