"""report.html: self-contained (data: images only, no links out, no scripts), one row per model,
deltas against the teacher and the previous model, partial reports of failed runs."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import build_report, failed_report

from compress.records import RunReport
from compress.report.html import write_html
from compress.report.plots import pareto_front


class Page(HTMLParser):
    """Collects what the tests look at: img srcs, tags with ids, rows and cells per table."""

    def __init__(self):
        super().__init__()
        self.imgs, self.ids, self.tags = [], set(), []
        self.tables: dict[str, list[list[str]]] = {}
        self._table, self._row, self._cell = None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self._table = a.get("id", f"t{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(("th:" if tag == "th" else "") + "".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> tuple[Page, str]:
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return page, text


def data_rows(page: Page, table: str) -> list[list[str]]:
    return [r for r in page.tables[table] if not r[0].startswith("th:")]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The page of a finished run with every section, rendered once for the tests below."""
    run_dir = tmp_path_factory.mktemp("full") / "run"
    report = build_report(run_dir)
    out = write_html(report, run_dir)
    assert out == run_dir / "report.html"
    page, text = parse(out)
    return report, run_dir, page, text


def test_self_contained_page_with_all_sections(full):
    _, run_dir, page, text = full
    assert len(page.imgs) == 6  # pareto, latency, 3 training (teacher, distill, prune), prune
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert "http://" not in text and "https://" not in text
    assert "script" not in page.tags and "link" not in page.tags and "<script" not in text
    assert {"models", "pareto", "stages", "prune", "trials", "readiness"} <= page.ids
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert pngs == ["latency.png", "pareto.png", "prune-02-prune.png", "training-00-teacher.png",
                    "training-01-distill.png", "training-02-prune.png"]
    assert (run_dir / "plots" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_row_per_model_with_deltas(full):
    report, _, page, text = full
    rows = data_rows(page, "models")
    assert [r[0] for r in rows] == [m.name for m in report.models]
    # columns: model stage precision params MACs size quality split p50 p90 runs | vs teacher
    # (quality, latency, size) | vs previous (quality, latency, size)
    teacher, student, pruned, int8 = rows
    assert page.tables["models"][0][6] == "th:accuracy"  # one metric for all: named in the header
    assert page.tables["models"][0][8:11] == ["th:p50 ms", "th:p90 ms", "th:runs"]  # no tokens
    assert teacher[6:11] == ["99.72%", "test", "0.830", "0.871", "200"]
    assert [r[10] for r in rows] == ["200", "2,760", "3,680", "5,360"]  # as the benchmark timed
    assert teacher[11:] == ["-"] * 6
    # 0.060 / 0.83 ms and 82k / 2.723M bytes; the previous model is the teacher
    assert student[11:14] == ["-2.22 pp", "0.0723x13.8x faster", "0.0301x"]
    assert student[14:] == student[11:14]
    assert pruned[14:] == ["-0.56 pp", "0.75x1.33x faster", "0.585x"]  # 0.045 / 0.060, 48k / 82k
    assert int8[11:] == ["-3.05 pp", "0.0373x26.8x faster", "0.00771x",
                         "-0.27 pp", "0.689x1.45x faster", "0.438x"]
    # the caption states the counts the table and the plots stand on, not the teacher's alone
    assert ("graph optimization all, timed runs per model: teacher 200, student 2,760, "
            "student-pruned 3,680, student-int8 5,360 (timed in interleaved blocks of about equal "
            "time, so a faster model runs more calls). Quality on 360 test samples.") in text


def test_tables_of_prune_quantize_readiness(full):
    _, _, page, text = full
    prune = data_rows(page, "prune")
    assert [r[:2] for r in prune] == [["1", "0.125"], ["2", "0.25"]]
    assert prune[1][-3:] == ["40.00%", "86.00%", "96.80%"]
    trials = data_rows(page, "trials")
    assert [t[0] for t in trials] == ["none", "conv1"]
    assert '<tr class="kept"><td>conv1</td>' in text  # the kept trial is marked
    assert "kept: int8 (conv1 in float) - accuracy drop 0.83 pp &gt; 0.5 pp with all int8" in text
    ready = data_rows(page, "readiness")
    assert ready == [["student-int8", "nnapi", "100.00%", "1", "none"],
                     ["student-int8", "coreml", "80.00%", "2", "Flatten, QuantizeLinear"]]
    assert "Intel(R) Xeon(R) Platinum 8480+" in text and "1.32.0" in text


def test_fp32_kept_marks_no_trial(report, run_dir):
    quantize = next(s for s in report.stages if s.kind == "quantize")
    quantize.metrics.update(kept="fp32", reason="int8 is not faster: p50 0.0310 ms vs fp32 0.0300 ms")
    _, text = parse(write_html(report, run_dir))
    assert 'class="kept"' not in text
    assert "kept: fp32 (the input model) - int8 is not faster: p50 0.0310 ms vs fp32 0.0300 ms" in text


def test_stage_of_another_shape_is_named_not_half_read(report, run_dir):
    """A stored quantize stage without ``kept`` (another version's shape) gets no trials table,
    and the stages table says which key it lacked."""
    quantize = next(s for s in report.stages if s.kind == "quantize")
    del quantize.metrics["kept"]
    page, text = parse(write_html(report, run_dir))
    assert "trials" not in page.ids
    assert "(stored in another version&#x27;s shape, kept: Field required)" in text


def test_failed_run_renders_escaped(tmp_path):
    page, text = parse(write_html(failed_report(), tmp_path))
    assert "models" not in page.ids and "No model was measured in this run." in text
    assert "<script>" not in text
    assert "stage prune: &lt;script&gt;alert(1)&lt;/script&gt; ratio 0.99" in text
    assert 'class="status-failed">failed</span>' in text
    assert [r[2] for r in data_rows(page, "stages")] == ["done", "done", "failed"]
    assert len(page.imgs) == 2  # training curves of teacher and distill; no pareto without models
    assert not (tmp_path / "plots" / "pareto.png").exists()


def test_models_without_samples_skip_the_latency_plot(run_dir):
    report = build_report(run_dir, samples=False)
    report.stages = []  # only the models' plots
    report.models[1].samples = "05-benchmark/latency/missing.npy"
    page, text = parse(write_html(report, run_dir))
    assert "pareto" in page.ids and not (run_dir / "plots" / "latency.png").exists()
    assert len(page.imgs) == 1 and "No stage ran." in text


def test_text_from_the_report_is_escaped(report, run_dir):
    report.pipeline = 'a<b>&"c'
    report.models[0].name = "<img src=x onerror=alert(1)>"
    report.stages = report.stages[3:4]  # no plots of stages: this test is about text
    _, text = parse(write_html(report, run_dir))
    assert "<title>compress run: a&lt;b&gt;&amp;&quot;c</title>" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


def test_real_pipeline_report_of_the_old_shape_renders(tmp_path):
    """A report.json written by `compress pipeline pipelines/mobile.yaml` before the report grew
    samples, quality and split: every model still gets a row and the page stays self-contained."""
    path = Path(__file__).parent / "data" / "mobile-report.json"
    old = RunReport.load(path)
    page, text = parse(write_html(old, tmp_path))
    names = [m["name"] for m in json.loads(path.read_text())["models"]]
    assert [r[0] for r in data_rows(page, "models")] == names
    assert "pareto" in page.ids and "http" not in text
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)


@pytest.mark.parametrize(("points", "higher", "front"), [
    ([(1.0, 0.99), (0.1, 0.97), (0.2, 0.96), (0.05, 0.95)], True, [3, 1, 0]),
    ([(1.0, 0.99), (0.1, 0.97), (0.2, 0.96), (0.05, 0.95)], False, [3]),
    ([(0.5, 0.9), (0.5, 0.9), (0.5, 0.8)], True, [0]),
    ([(2.0, 0.1), (1.0, 0.3), (3.0, 0.05)], False, [1, 0, 2]),
])
def test_pareto_front(points, higher, front):
    assert pareto_front(points, higher) == front


def test_samples_outside_the_run_dir_are_ignored(tmp_path):
    from compress.report.plots import load_samples

    run_dir = tmp_path / "run"
    rel = build_report(run_dir).models[0].samples
    assert load_samples(run_dir, rel).shape == (200,)
    outside = tmp_path / "secret.npy"
    outside.write_bytes((run_dir / rel).read_bytes())
    assert load_samples(run_dir, "../secret.npy") is None
    assert load_samples(run_dir, None) is None
