"""Latency measurement on ONNX Runtime: one measurement core for stages, CLI and tests."""
