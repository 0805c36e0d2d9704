"""The device check a bundle carries: per output, how close a device's outputs must come to the
reference outputs in ``eval.npz``, by task and precision. ``runner.py --eval`` applies it
wherever the bundle runs (x86, arm64, a browser), and the writer applies it to ``model.ort``
before a bundle is written.

Where the numbers come from (measured, FACTS.md and this module's tests):
- fp32 matches across runtimes to about 1e-6 (x86 Python, arm64 under qemu, onnxruntime-web);
  the digits CNN differed by 8.5e-8 of its logit spread between ORT's optimization levels.
- int8 kernels differ across runtimes: the same int8 MiniLM-L3 gave cosine 0.990 to x86 on
  WASM and on aarch64; an int8 digits CNN run by ORT's QLinear kernels and by its reference
  (dequantize, float) path differed by exactly one output quantization step (1/255 of the logit
  spread) with every argmax equal, while on an AVX2-only CPU 2 of 64 argmax differed between the
  int8 .onnx and .ort. Under qemu (tests' int8 digits CNN, 64 eval samples, the runner's own
  --eval): AVX2-only kernels (``qemu-x86_64 -cpu Haswell``) gave every argmax equal and a max abs
  diff of 2.9% of the logit spread (U8S8 saturation without VNNI); aarch64 kernels gave 0. So
  int8 allows 10% of the spread (over 3x the AVX2 figure) and 3 of 64 argmax.
- fp32 under the same emulation: 3.8e-6 (1.1e-7 of the spread) on both.
"""

from __future__ import annotations

import numpy as np

from compress.bundle.manifest import Check, Tolerance

FP32_ARGMAX, FP32_ABS = 1.0, 1e-4  # max abs diff as a share of the reference's spread
INT8_ARGMAX, INT8_ABS = 0.95, 0.10  # ~25 output quantization steps; 3 of 64 argmax may differ
FP32_COS, INT8_COS = (0.9999, 0.999), (0.98, 0.95)  # (mean, min) pooled cosine


def tolerances(task: str, precision: str, expected: dict[str, np.ndarray]) -> Check:
    """The check for ``expected`` outputs: argmax agreement and max abs diff for classifiers,
    pooled cosine for embeddings (any other task: max abs diff and cosine)."""
    int8 = precision in ("int8", "mixed")
    rows = []
    for name, ref in expected.items():
        spread = float(np.max(ref) - np.min(ref)) if ref.size else 0.0
        share = INT8_ABS if int8 else FP32_ABS
        abs_limit = max(share * spread, 1e-6)
        cos_mean, cos_min = INT8_COS if int8 else FP32_COS
        if task in ("classification", "sequence-classification"):
            argmax = INT8_ARGMAX if int8 else FP32_ARGMAX
            rows.append(Tolerance(
                output=name, argmax_agreement=argmax, max_abs_diff=abs_limit, cosine_mean=None,
                cosine_min=None,
                basis=f"{precision} classifier: argmax agreement >= {argmax:g}, max abs diff <= "
                      f"{share:g} x the reference logits' spread ({spread:.4g})"))
        else:
            rows.append(Tolerance(
                output=name, argmax_agreement=None, max_abs_diff=None if task == "embedding"
                else abs_limit, cosine_mean=cos_mean, cosine_min=cos_min,
                basis=f"{precision} {task}: pooled cosine to the reference, mean >= {cos_mean:g}, "
                      f"min >= {cos_min:g}"))
    return Check(precision=precision, outputs=rows)
