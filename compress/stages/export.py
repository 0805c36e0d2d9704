"""Export to ONNX (``compress.export.checked`` does the work: one file, parity with PyTorch on
test inputs, judged by the task)."""

from __future__ import annotations

from compress.artifacts import ModelArtifact, StageResult
from compress.config.stages import ExportConfig
from compress.export.checked import export_checked
from compress.stage_reports import ExportReport
from compress.stages.base import Stage, StageContext


class ExportStage(Stage):
    kind = "export"

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: ExportConfig = self.cfg
        if ctx.task.generates:
            return _kv_decoder(model, cfg, ctx)
        path = ctx.stage_dir / "model.onnx"
        parity = export_checked(model.module, ctx.task, ctx.example(cfg.batch_size), path, cfg,
                                ctx.data.test)
        meta = {**model.meta, "stage": ctx.stage_name}
        art = ModelArtifact.from_onnx(model.name, path, model.precision, **meta)
        return StageResult(art, ExportReport(**parity.metrics(), bytes=path.stat().st_size), publish=[art])


def _kv_decoder(model: ModelArtifact, cfg: ExportConfig, ctx: StageContext) -> StageResult:
    """A causal LM as one decoder graph with a KV cache, checked against torch over a prefill
    of a test prompt and ``parity_steps`` greedy steps (logits within ``atol``, tokens equal)."""
    from compress.export.kv_cache import check_kv_parity, export_kv_decoder
    from compress.records.causal_lm import KVExportReport

    path = ctx.stage_dir / "model.onnx"
    layout = export_kv_decoder(model.module, path, cfg.opset)
    prompt = ctx.data.test[0][1][:32].tolist()
    parity = check_kv_parity(path, model.module, prompt, cfg.parity_steps, cfg.atol)
    given = model.meta["kv_cache"]  # the teacher's stop ids and context, the student's layout
    kv = layout.manifest(given["stop_ids"], given["max_context"])
    art = ModelArtifact.from_onnx(model.name, path, "fp32",
                                  **{**model.meta, "stage": ctx.stage_name, "kv_cache": kv})
    report = KVExportReport(max_abs_logit_diff=parity.max_abs_logit_diff,
                            parity_steps=cfg.parity_steps, greedy_tokens_equal=parity.tokens_equal,
                            bytes=path.stat().st_size, num_layers=layout.num_layers,
                            num_kv_heads=layout.num_kv_heads, head_dim=layout.head_dim)
    return StageResult(art, report, publish=[art])
