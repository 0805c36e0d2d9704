"""compress: distill, prune, quantize and export PyTorch models to fast ONNX artifacts."""

__version__ = "0.1.0"
