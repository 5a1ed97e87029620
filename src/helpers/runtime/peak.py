"""This machine's measured compute peaks, per precision, through the runtimes themselves.

One ONNX graph holding a single ``(n x n) @ (n x n)`` MatMul, run by each runtime with the given
threads: ``fp32`` a float MatMul; ``int8`` the same MatMul in QDQ form (uint8 activations, int8
weights, as phase 04 quantizes), which both runtimes turn into an integer GEMM (VNNI ``VPDPBUSD`` /
AMX where the CPU has them); ``bf16`` the float graph under OpenVINO's bf16 hint. FLOP/s =
``2 n^3`` / the best of many short calls (a few ms each, so on a shared machine some calls find the
cores free; fewer, longer calls read a contended peak). Each runtime reaches its best rate at its own
size (its fastest kernel, its blocking, its cache fit: onnxruntime's INT8 peaked at n = 512 where
OpenVINO's AMX kernels ran single model layers 45% faster), so every runtime is measured at every size
of ``SIZES`` and the peak of a precision is the best over runtimes and sizes, labelled with both: the
practical limit a model's throughput is compared with (phase 05, ``benchmarks/bench_runtime.py``).
A fraction of peak above 1 would mean the peak is still understated.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers.runtime.sessions import BACKENDS, INPUT_NAME, PRECISIONS, support


def gemm_model(n: int, precision: str, seed: int = 0) -> onnx.ModelProto:
    """``images (n, n) @ W (n, n)``; QDQ form for int8. The input is named like the project's models."""
    weight = np.random.default_rng(seed).standard_normal((n, n)).astype(np.float32)
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, n])
    if precision != "int8":
        nodes = [helper.make_node("MatMul", [INPUT_NAME, "w"], ["logits"])]
        inits = [numpy_helper.from_array(weight, "w")]
    else:
        w_scale = np.float32(np.abs(weight).max() / 127)
        inits = [
            numpy_helper.from_array(np.round(weight / w_scale).astype(np.int8), "w_q"),
            numpy_helper.from_array(np.array(w_scale, np.float32), "w_s"),
            numpy_helper.from_array(np.array(0, np.int8), "w_z"),
            numpy_helper.from_array(np.array(1.0, np.float32), "x_s"),
            numpy_helper.from_array(np.array(128, np.uint8), "x_z"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", [INPUT_NAME, "x_s", "x_z"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"]),
            helper.make_node("MatMul", ["x_dq", "w_dq"], ["logits"]),
        ]
    graph = helper.make_graph(nodes, f"gemm_{precision}", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def measure_gemm(runtime: str, precision: str, threads: int, n: int = 512, repeats: int = 20) -> float:
    """Best FLOP/s (operations/s for int8) of ``repeats`` n x n GEMMs on ``runtime`` at ``precision``."""
    if n < 64 or repeats < 1:
        raise ValueError(f"need n >= 64 and repeats >= 1, got n={n}, repeats={repeats}")
    x = np.random.default_rng(1).uniform(-100, 100, (n, n)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="gemm-") as tmp:
        path = Path(tmp) / "gemm.onnx"
        onnx.save(gemm_model(n, precision), str(path))
        session = BACKENDS[runtime](path, precision, threads, n, (n,))  # a 2-D graph, not an image model
        session.run(x)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(x)
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


SIZES = (256, 512, 1024)  # GEMM sizes every runtime is measured at (see the module docstring)


def measured_peaks(threads: int, sizes=SIZES, repeats: int = 20) -> dict[str, dict]:
    """Per precision that some runtime runs here: each runtime's best GEMM FLOP/s over ``sizes`` (and the size
    that reached it), why the others were not measured, and the best (``flops_per_s``, ``by``, ``n``)."""
    peaks = {}
    for precision in PRECISIONS:
        by_runtime, at_size, reasons = {}, {}, {}
        for runtime in ("onnxruntime", "openvino"):
            ok, why = support(runtime, precision)
            if not ok:
                reasons[runtime] = why
                continue
            rates = {n: measure_gemm(runtime, precision, threads, n, repeats) for n in sizes}
            at_size[runtime] = max(rates, key=rates.get)
            by_runtime[runtime] = rates[at_size[runtime]]
        if not by_runtime:
            continue  # no runtime runs it here (bf16 without native support): no peak to compare with
        best = max(by_runtime, key=by_runtime.get)
        peaks[precision] = {
            "flops_per_s": by_runtime[best],
            "by": best,
            "n": at_size[best],
            "by_runtime": by_runtime,
            "n_by_runtime": at_size,
            "not_measured": reasons,
            "sizes": list(sizes),
            "threads": threads,
        }
    return peaks
