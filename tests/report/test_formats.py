from compress.records import RunReport


def _label(report: dict) -> str:
    return RunReport(pipeline="p", config_sha256="cd" * 32, device="cpu", stages=[], models=[],
                     **report).final_label


def test_final_label_never_reads_none():
    assert _label({"final": "student-int8", "status": "done"}) == "student-int8"
    assert _label({"final": None, "status": "failed"}) == (
        "none (the run failed before a final model)")
    assert _label({"final": None, "status": "done"}) == "none"
