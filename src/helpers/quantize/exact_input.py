"""The INT8 model's entry: pixels quantized exactly, before the layout transpose, so the first layer runs on integers.

Every model takes uint8 pixel values carried as float32 (``helpers.data.preprocess``: 0-255 integers).
Quantized to uint8 with scale 1 and zero point 0 they are exact, whatever range a calibration method
estimated for them (percentile or entropy may clip the brightest pixels). ORT's QDQ quantizer puts the
input's QuantizeLinear/DequantizeLinear pair *after* the model's first node, the NHWC -> NCHW Transpose;
OpenVINO then keeps that Transpose and the first convolution in floating point (FP32 on an AMX Xeon,
34% of an INT8 call; bf16 on AVX512-BF16) behind a reorder to u8. Quantization is elementwise, so it
commutes exactly with a Transpose: moving the pair in front of it changes no value any runtime computes,
and lets OpenVINO run the first convolution as INT8 (``benchmarks/bench_runtime.py --profile`` lists
every convolution's kernel and precision).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from helpers.models.onnx_export import INPUT_NAME

PIXEL_SCALE, PIXEL_ZERO_POINT = 1.0, 0  # uint8 pixels 0-255, exactly
LAYOUT_OPS = ("Transpose",)  # moves values without changing them: quantization commutes with it


def _consumers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if tensor in n.input]


def rewrite(model: onnx.ModelProto) -> dict:
    """Quantize the input exactly (scale 1, zero point 0) and ahead of a layout op; returns what was done."""
    graph = model.graph
    entry = _consumers(graph, INPUT_NAME)
    layout = entry[0] if len(entry) == 1 and entry[0].op_type in LAYOUT_OPS else None
    quantized = layout.output[0] if layout else INPUT_NAME
    pairs = [
        (q, dq)
        for q in _consumers(graph, quantized)
        if q.op_type == "QuantizeLinear"
        for dq in _consumers(graph, q.output[0])
        if dq.op_type == "DequantizeLinear"
    ]
    if len(pairs) != 1 or len(_consumers(graph, quantized)) != 1:
        return {"input_quantization": "left as quantized (no single Q/DQ pair at the model's entry)"}
    q, dq = pairs[0]
    scale, zero_point = f"{INPUT_NAME}_exact_scale", f"{INPUT_NAME}_exact_zero_point"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(PIXEL_SCALE, np.float32), scale),
            numpy_helper.from_array(np.array(PIXEL_ZERO_POINT, np.uint8), zero_point),
        ]
    )
    replaced = set(q.input[1:]) | set(dq.input[1:])
    q.input[1:], dq.input[1:] = [scale, zero_point], [scale, zero_point]
    still_used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name in replaced and i.name not in still_used]:
        graph.initializer.remove(init)
    if (
        layout is not None
    ):  # INPUT -> layout -> Q -> DQ -> first layer  becomes  INPUT -> Q -> DQ -> layout -> first layer
        after = dq.output[0]
        for node in _consumers(graph, after):
            node.input[:] = [layout.output[0] if name == after else name for name in node.input]
        q.input[0], layout.input[0] = INPUT_NAME, dq.output[0]
        order = [q, dq, layout] + [n for n in graph.node if n not in (q, dq, layout)]
        del graph.node[:]
        graph.node.extend(order)
    where = f"before the {layout.op_type}" if layout is not None else "at the input"
    return {"input_quantization": f"exact: uint8 scale {PIXEL_SCALE:g}, zero point {PIXEL_ZERO_POINT}, {where}"}


def apply(path: str | Path) -> dict:
    """``rewrite`` the INT8 model at ``path`` in place (the caller writes ``path`` atomically)."""
    model = onnx.load(str(path))
    done = rewrite(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return done
