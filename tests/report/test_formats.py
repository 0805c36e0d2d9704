from compress.report.formats import final_label


def test_final_label_never_reads_none():
    assert final_label({"final": "student-int8", "status": "done"}) == "student-int8"
    assert final_label({"final": None, "status": "failed"}) == (
        "none (the run failed before a final model)")
    assert final_label({"final": None, "status": "done"}) == "none"
