"""ONNX operators as the latency records count them: operation classes, FLOPs and bytes of an executed node.

Owns the tables behind an onnxruntime subgraph's work (``measure_onnxruntime`` applies them to the
graph onnxruntime executes after its optimizations):

* :func:`operation_type` -- the coarse class of an operator: conv, matmul, pool, reduce, quantize,
  layout or elementwise;
* :func:`node_flops` -- FLOPs (operations, for integer kernels) of one node: convolutions
  ``2 x N x H_out x W_out x |weights|``; matrix products ``2 x |output| x K``; pooling
  ``|output| x |kernel|``; global pooling and reductions ``|input|``; elementwise, activation and
  (de)quantization nodes ``|output|``; layout nodes (transpose, reshape, reorder ...) 0;
* :class:`TensorInfo` -- a tensor's shape and element size (bytes = every input, weights included,
  plus every output, at the element size actually run: uint8 and int8 1 byte, float 4);
* :func:`fusion_pattern` -- the name a fused node is recorded under (``nchwc:Conv+Sum+Relu``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

DTYPE_BYTES = {
    "float": 4,
    "float16": 2,
    "bfloat16": 2,
    "double": 8,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "bool": 1,
}
CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv"}
MATMUL_OPS = {
    "Gemm",
    "FusedGemm",
    "QGemm",
    "MatMul",
    "FusedMatMul",
    "QLinearMatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
}
POOL_OPS = {"MaxPool", "AveragePool", "QLinearAveragePool", "NhwcMaxPool"}
REDUCE_OPS = {
    "GlobalAveragePool",
    "GlobalMaxPool",
    "QLinearGlobalAveragePool",
    "ReduceMean",
    "ReduceMax",
    "ReduceSum",
    "ReduceMin",
}
QUANTIZE_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
LAYOUT_OPS = {
    "Transpose",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "ReorderInput",
    "ReorderOutput",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Pad",
    "Shape",
    "Expand",
    "Tile",
}


def operation_type(op_type: str) -> str:
    """The coarse class of an executed operator: conv, matmul, pool, reduce, quantize, layout, elementwise."""
    for kind, ops in (
        ("conv", CONV_OPS),
        ("matmul", MATMUL_OPS),
        ("pool", POOL_OPS),
        ("reduce", REDUCE_OPS),
        ("quantize", QUANTIZE_OPS),
        ("layout", LAYOUT_OPS),
    ):
        if op_type in ops:
            return kind
    return "elementwise"


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as a node runs it: its shape and the bytes of one element."""

    shape: tuple[int, ...]
    itemsize: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize


def _weight_input(op_type: str) -> int:
    return 3 if op_type in ("QLinearConv", "QLinearMatMul", "QGemm") else 1


def node_flops(node: onnx.NodeProto, inputs: list[TensorInfo | None], outputs: list[TensorInfo]) -> int:
    """FLOPs (operations, for integer kernels) of one executed node; see the module docstring."""
    kind, out = operation_type(node.op_type), outputs[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if kind == "conv":
        weight = inputs[_weight_input(node.op_type)]
        channels = out.shape[-1] if attrs.get("channels_last") else out.shape[1]
        return 2 * (out.size // channels) * weight.size
    if kind == "matmul":
        a = inputs[0]
        k = a.shape[-2] if attrs.get("transA") else a.shape[-1]
        return 2 * out.size * k
    if kind == "pool":
        return out.size * int(np.prod(attrs.get("kernel_shape", [1])))
    if kind == "reduce":
        return inputs[0].size
    if kind == "layout":
        return 0
    return out.size


def fusion_pattern(node: onnx.NodeProto) -> str:
    """The node's operator, with its NCHWc domain, a fused residual sum and a fused activation."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    domain = node.domain.rsplit(".", 1)[-1] if node.domain.endswith("nchwc") else ""
    pattern = f"{domain}:{node.op_type}" if domain else node.op_type
    if domain and node.op_type == "Conv" and len(node.input) > 3 and node.input[3]:
        pattern += "+Sum"
    if isinstance(attrs.get("activation"), bytes) and attrs["activation"]:
        pattern += "+" + attrs["activation"].decode()
    return pattern


def profile_tensor(entry: dict) -> TensorInfo:
    """A tensor from onnxruntime's profile (``{"<dtype>": [dims]}``, its ``output_type_shape`` entries)."""
    ((dtype, shape),) = entry.items()
    return TensorInfo(tuple(int(d) for d in shape), DTYPE_BYTES[dtype])
