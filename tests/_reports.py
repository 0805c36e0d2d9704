"""Each stage's typed report with plausible numbers, as the stages build them: the report tests
render report.json stages made from these, so a fixture cannot drift from what a stage writes."""

from __future__ import annotations

from compress.records.stage_reports import (
    BenchmarkReport,
    Calibration,
    DistillReport,
    ExportReport,
    Fp32Side,
    Int8Side,
    PruneReport,
    PruneStep,
    QuantizeReport,
    QuantTrial,
    ReadinessReport,
    ReadinessRow,
    SensitiveTensor,
    StageReport,
    TeacherReport,
)


def stage_reports(models: tuple[str, ...] | list[str] = ("teacher", "student")) -> dict[str, StageReport]:
    """Each stage's typed report, as the stages build them (report.json stores ``as_dict()``)."""
    hist = [{"epoch": e, "loss": 1.0 / e, "val_accuracy": 0.90 + 0.01 * e} for e in range(1, 6)]
    rec = [[{"epoch": e, "loss": 0.3 / e, "val_accuracy": 0.95 + 0.005 * e} for e in (1, 2)]
           for _ in range(2)]
    steps = [PruneStep(step=s, ratio=r, params=19_800 - 4000 * s, macs=3_200_000 - 700_000 * s,
                       p50_ms=0.06 - 0.007 * s, speedup=1 + 0.15 * s, acc_pruned=0.6 - 0.1 * s,
                       acc_bn=0.9 - 0.02 * s, acc_recovered=0.972 - 0.002 * s)
             for s, r in ((1, 0.125), (2, 0.25))]
    trials = [QuantTrial(float_layers=[], accuracy=0.961, top1_agreement=0.985, cosine=0.998,
                         p50_ms=0.030, fp32_p50_ms=0.045, speedup=1.5),
              QuantTrial(float_layers=["conv1"], accuracy=0.9667, top1_agreement=0.993,
                         cosine=0.999, p50_ms=0.031, fp32_p50_ms=0.045, speedup=1.45)]
    row = {"supported_nodes": 10, "nodes": 10}
    readiness = {"student-int8": {
        "nnapi": ReadinessRow(fraction=1.0, partitions=1, unsupported_ops=[], **row),
        "coreml": ReadinessRow(fraction=0.8, partitions=2, unsupported_ops=["Flatten", "QuantizeLinear"],
                               **{**row, "supported_nodes": 8})}}
    parity = {"max_abs_diff": 1.2e-6, "top1_agreement": 1.0, "parity_samples": 64, "parity_split": "test"}
    return {
        "teacher": TeacherReport(metric="accuracy", val=0.995, best_epoch=5, history=hist, bytes=2_723_000,
                                 params=696_042, macs=105_760_000, **parity),
        "distill": DistillReport(metric="accuracy", val=0.975, best_epoch=5, samples_per_s=900.0,
                                 history=hist, params=19_800, macs=3_200_000),
        "prune": PruneReport(target={"ratio": 0.25}, ratio=0.25, params_before=19_800, params=11_800,
                             macs_before=3_200_000, macs=1_800_000, p50_ms_before=0.06, p50_ms=0.046,
                             speedup=1.3, val_before=0.975, val=0.968, metric="accuracy", threads=1,
                             opt_level="all", trajectory=steps, histories=rec, notes=["channels -25%"]),
        "export": ExportReport(bytes=48_000, **parity),
        "quantize": QuantizeReport(
            mode="static", scheme="x86-vnni", scheme_evidence="avx512_vnni", activation_type="QUInt8",
            weight_type="QInt8", reduce_range=False, per_channel=True, scheme_why="VNNI: U8S8",
            fp32=Fp32Side(bytes=48_000, accuracy=0.9694, p50_ms=0.045),
            int8=Int8Side(**trials[1].model_dump(), bytes=21_000, precision="mixed"), split="val",
            fused_ops={"QLinearConv": 8}, conv_count=9, ort_ops={"QLinearConv": 8, "Conv": 1},
            float_layers=["conv1"], float_modules=["stem.0"], trials=trials,
            sensitivity=[SensitiveTensor(tensor="t", sqnr_db=3.1, nodes=["conv1"])], kept="int8",
            reason="accuracy drop 0.83 pp > 0.5 pp with all int8", threads=1, opt_level="all",
            calibration=Calibration(method="minmax", samples=256, split="train")),
        "benchmark": BenchmarkReport(models=list(models), split="test", clock="cpu"),
        "package": ReadinessReport(bundle="bundle", model="student-int8", files={"model.onnx": 21_000},
                                   fixes=[], readiness=readiness),
    }
