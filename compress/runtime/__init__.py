"""Helpers shared by the stages: files, devices, training, ONNX export and sessions."""
