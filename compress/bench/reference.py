"""A fixed reference workload, built deterministically with onnx.helper.

Baselines store the model's latency divided by this workload's latency, both measured in one
run, so a machine that is uniformly faster or slower does not read as a change in the model.
Changing the graph or its weights changes every stored ratio: bump ``REFERENCE_VERSION``.
"""

from __future__ import annotations

import hashlib

import numpy as np

REFERENCE_VERSION = 1
_OPSET = 17
_IR_VERSION = 8  # readable by every ONNX Runtime from 1.14 on


def conv_mlp_model(channels: int = 16, size: int = 32, convs: int = 3, hidden: int = 64,
                   classes: int = 10, seed: int = 0):
    """A small CNN (Conv+Relu stack, global pool, two Gemms) with seeded weights.

    Returns an ``onnx.ModelProto`` taking ``x`` of shape [1, channels, size, size].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(name: str, shape: tuple[int, ...], fan_in: int) -> str:
        # He-scaled weights keep activations in a normal range (no denormals, no overflow)
        w = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name))
        return name

    cur = "x"
    for i in range(convs):
        w = weight(f"conv{i}.w", (channels, channels, 3, 3), channels * 9)
        b = weight(f"conv{i}.b", (channels,), channels)
        nodes.append(helper.make_node("Conv", [cur, w, b], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        cur = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [cur], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    nodes.append(helper.make_node(
        "Gemm", ["flat", weight("fc1.w", (hidden, channels), channels),
                 weight("fc1.b", (hidden,), channels)], ["h"], transB=1))
    nodes.append(helper.make_node("Relu", ["h"], ["hr"]))
    nodes.append(helper.make_node(
        "Gemm", ["hr", weight("fc2.w", (classes, hidden), hidden),
                 weight("fc2.b", (classes,), hidden)], ["y"], transB=1))
    graph = helper.make_graph(
        nodes, "compress_reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="compress", ir_version=_IR_VERSION)
    onnx.checker.check_model(model)
    return model


def reference_model_bytes() -> bytes:
    """The serialized reference workload (about 0.2 ms at one thread on a 2.8 GHz Xeon)."""
    return conv_mlp_model().SerializeToString()


def reference_sha256() -> str:
    return hashlib.sha256(reference_model_bytes()).hexdigest()
