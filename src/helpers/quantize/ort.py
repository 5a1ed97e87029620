"""Post-training static INT8 quantization with ONNX Runtime, and the phase-04 results table.

The flow, each step a function::

    prepared = prepare_model("model.onnx", "prepared.onnx")          # checker, quant_pre_process
    stats = collect_calibration_statistics(prepared, slice_images)   # one pass, guarded
    report = quantize_model(prepared, "model_int8_minmax.onnx", stats, "minmax")

* **Calibration data.** ``SliceReader`` yields ``helpers.data.preprocess(slice)`` in batches under
  the input name ``images``. Before any activation is computed, ``helpers.quantize.guard``
  compares the calibration tensors with ``preprocess`` of the same images (raise by default).
* **One pass, every method.** ``collect_calibration_statistics`` runs the slice through ORT's own
  calibrator once and keeps its per-tensor histograms (with the exact min/max). ``minmax``,
  ``entropy`` and ``percentile`` ranges all come from that cache, so re-quantizing with another
  method never recomputes activations. Entropy gets ``num_bins`` (2048) > ``num_quantized_bins``
  (128): with ``quantize_static``'s default entropy options (128 and 128) the KL search has a
  single candidate, the full range, and entropy silently equals MinMax.
* **Types.** U8S8 by default (uint8 activations, int8 per-channel weights); see ``TYPES_REASON``.
  The input (uint8 pixels) is quantized exactly and ahead of the layout transpose
  (``helpers.quantize.exact_input``), so the first layer runs on integers too.
* **Sensitivity and fallback.** ``layer_sensitivity`` quantizes one weighted layer at a time;
  ``quantize_within_tolerance`` keeps the most sensitive layers in FP32 until the accuracy drop is
  within a tolerance. ``calibration_size_sweep`` measures accuracy per calibration-set size, and
  ``wrong_preprocessing_ablation`` calibrates on pixels divided by 255 (the "v1.0 bug") next to
  the correct calibration.
* **Results.** ``variant_metrics`` / ``build_quant_report`` / ``report_table`` / ``report_figure``
  compare FP32 with every INT8 variant (ORT and PyTorch): accuracy with 95% CI, MCC, agreement
  with FP32, logit differences, size. Timings never enter the report; callers pass them to
  ``report_table`` for display and log them.

Every file is written through ``helpers.run.atomic``; the same prepared model, slice and options give
byte-identical INT8 models.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from onnxruntime.quantization.calibrate import HistogramCollector, TensorsData, create_calibrator, save_tensors_data
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from tqdm import tqdm

from helpers.data.datasets import preprocess, stratified_slice
from helpers.metrics import classification as metrics
from helpers.models import logits_file
from helpers.models.onnx_export import INPUT_NAME, onnx_logits
from helpers.quantize import exact_input
from helpers.quantize.guard import GuardFinding, check_calibration_inputs, check_calibration_slice
from helpers.run import atomic
from helpers.run.params import param, typed_config

log = logging.getLogger("helpers.quantize.ort")

METHODS = ("minmax", "entropy", "percentile")
FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
_ORT_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
CALIBRATED_OP_TYPES = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static quantizes

TYPES_REASON = (
    "U8S8: uint8 activations, int8 weights, weights per output channel. x86 VNNI (vpdpbusd) multiplies "
    "unsigned by signed bytes, which is ONNX Runtime's fast CPU integer path; quantize_static's default S8S8 "
    "runs slower than FP32 on this CPU (benchmarks/bench_quantization.py measures both). Per-channel weights "
    "because conv output channels span very different ranges. reduce_range stays off: the CPU has VNNI, so "
    "8-bit products do not saturate."
)


@dataclass(frozen=True)
class QuantizeConfig:
    """Phase 04's typed config (``phase.config``), validated when built: the calibration methods and their options,
    the diagnostics to run, PT2E, and the threads of the cross-runtime evaluation."""

    methods: tuple[str, ...] = field(default=METHODS, metadata=param("calibration_methods"))
    num_bins: int = 512
    percentile: float = 99.999
    size_sweep: tuple[int, ...] = (1, 5, 20)
    sensitivity: bool = True
    torch_pt2e: bool = True
    pt2e_compile: bool = False
    runtime_threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        methods = self.methods
        if not methods or isinstance(methods, str) or len(set(methods)) != len(methods):
            raise ValueError(
                f"calibration_methods must be a non-empty list of distinct methods from {list(METHODS)}, "
                f"got {methods!r}"
            )
        for method in methods:
            _check_choice(method, METHODS, "calibration method")
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {self.num_bins}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in self.size_sweep):
            raise ValueError(f"size_sweep must list calibration images per class >= 1, got {list(self.size_sweep)!r}")


def check_params(params: dict, config: dict | None = None) -> QuantizeConfig:
    """Phase 04's precheck: its typed config, before any kernel starts (a bad method must not wait for training)."""
    return typed_config(QuantizeConfig, dict(params))


def _check_choice(value: str, options, what: str) -> str:
    if value not in options:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(options)}")
    return value


# ---------------------------------------------------------------------------- model preparation


def check_model(path: str | Path) -> onnx.ModelProto:
    """Load an FP32 classifier and check it: onnx.checker, one 4-D float input named ``images``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist; export one with helpers.models.onnx_export")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValueError(
            f"{path} fails onnx.checker ({exc}); re-export the model with helpers.models.onnx_export before quantizing"
        ) from exc
    model = onnx.load(str(path))
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = inputs[0].type.tensor_type.shape.dim if len(inputs) == 1 else []
    if (
        len(inputs) != 1
        or inputs[0].name != INPUT_NAME
        or len(dims) != 4
        or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT
    ):
        found = [(i.name, len(i.type.tensor_type.shape.dim)) for i in inputs]
        raise ValueError(
            f"{path} must take one float32 NHWC input named {INPUT_NAME!r}, found (name, rank) {found}; "
            "export with helpers.models.onnx_export, which names the input 'images'"
        )
    return model


def prepare_model(model_path: str | Path, out_path: str | Path) -> Path:
    """Checked FP32 model -> ``quant_pre_process`` (shape inference + graph optimization) at ``out_path``."""
    check_model(model_path)
    return atomic.save_with(out_path, lambda tmp: quant_pre_process(str(model_path), str(tmp)))


def weighted_nodes(model_path: str | Path) -> list[str]:
    """Names of the nodes with weights (Conv, Gemm, MatMul), in graph order: the 'layers'."""
    nodes = [n for n in onnx.load(str(model_path)).graph.node if n.op_type in WEIGHTED_OPS]
    unnamed = sum(not n.name for n in nodes)
    if unnamed:
        raise ValueError(
            f"{model_path}: {unnamed} weighted node(s) have no name; node names are what "
            "nodes_to_exclude refers to -- run prepare_model on an exported model"
        )
    return [n.name for n in nodes]


# ---------------------------------------------------------------------------- calibration


class SliceReader(CalibrationDataReader):
    """Yields ``{"images": batch}`` of float32 NHWC calibration inputs, ``batch_size`` at a time."""

    def __init__(self, inputs: np.ndarray, batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.inputs, self.batch_size = inputs, batch_size
        self.set_range(0, len(inputs))

    def set_range(self, start_index: int, end_index: int) -> None:
        self._starts = iter(range(start_index, end_index, self.batch_size))
        self._end = end_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._starts, None)
        if start is None:
            return None
        return {INPUT_NAME: self.inputs[start : min(start + self.batch_size, self._end)]}

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass
class CalibrationStatistics:
    """Per-tensor histograms of one calibration pass; gives ranges for every method.

    ``histograms`` maps a tensor name to ORT's ``(counts, edges, min, max, threshold)``.
    ``seconds`` holds wall-clock timings (collection, each method's range search): for logs only.
    """

    model_sha256: str
    num_samples: int
    num_bins: int
    num_quantized_bins: int
    percentile: float
    guard: GuardFinding
    histograms: dict[str, tuple]
    seconds: dict[str, float] = field(default_factory=dict)
    _ranges: dict[str, TensorsData] = field(default_factory=dict, repr=False)

    def ranges(self, method: str) -> TensorsData:
        """Per-tensor (lowest, highest) for ``method``, computed once from the cached histograms."""
        _check_choice(method, METHODS, "calibration method")
        if method not in self._ranges:
            start = time.perf_counter()
            self._ranges[method] = self._compute(method)
            self.seconds[f"ranges_{method}"] = time.perf_counter() - start
        return self._ranges[method]

    def _compute(self, method: str) -> TensorsData:
        if method == "minmax":
            return TensorsData(CalibrationMethod.MinMax, {name: (h[2], h[3]) for name, h in self.histograms.items()})
        collector = HistogramCollector(
            method=method,
            symmetric=False,
            num_bins=self.num_bins,
            num_quantized_bins=self.num_quantized_bins,
            percentile=self.percentile,
            scenario="same",
        )
        collector.histogram_dict = self.histograms
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints per-call progress lines
            return TensorsData(_ORT_METHODS[method], collector.compute_collection_result())

    def calibration_seconds(self, method: str) -> float:
        """Collection plus ``method``'s range search, in seconds (for logs, never the report)."""
        self.ranges(method)
        return self.seconds["collect"] + self.seconds[f"ranges_{method}"]

    def range_table(self, method: str) -> dict[str, list[float]]:
        """``{tensor: [lowest, highest]}`` for ``method``, sorted by tensor name (JSON-ready)."""
        return {name: [float(v) for v in self.ranges(method)[name].range_value] for name in sorted(self.histograms)}

    def line(self) -> str:
        """The guard's finding and what was collected, in one line."""
        return f"{self.guard.message}; {self.num_samples} slice images, {len(self.histograms)} tensors"

    def describe(self) -> dict:
        """The deterministic description that goes into quant_report.json."""
        return {
            "samples": self.num_samples,
            "model_sha256": self.model_sha256,
            "num_bins": self.num_bins,
            "num_quantized_bins": self.num_quantized_bins,
            "percentile": self.percentile,
            "tensors": len(self.histograms),
            "guard": self.guard.to_dict(),
        }


def collect_calibration_statistics(
    prepared_path: str | Path,
    images: np.ndarray,
    *,
    calibration_inputs: np.ndarray | None = None,
    guard: str = "raise",
    batch_size: int = 64,
    num_bins: int = 2048,
    num_quantized_bins: int = 128,
    percentile: float = 99.999,
) -> CalibrationStatistics:
    """Run the calibration slice through the prepared model once and keep ORT's histograms.

    ``images`` is the uint8 NHWC slice. The calibrator sees ``preprocess(images)`` unless
    ``calibration_inputs`` is given -- only the wrong-preprocessing ablation does that -- and the
    guard compares what the calibrator sees with ``preprocess(images)`` (``guard="raise"`` stops).
    """
    check_calibration_slice(images)
    if num_bins <= num_quantized_bins:
        raise ValueError(
            f"num_bins ({num_bins}) must exceed num_quantized_bins ({num_quantized_bins}); with equal "
            "values the entropy search has one candidate and reproduces MinMax"
        )
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    inputs = preprocess(images) if calibration_inputs is None else calibration_inputs
    finding = check_calibration_inputs(inputs, images, mode=guard)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calib-") as tmp:
        calibrator = create_calibrator(
            Path(prepared_path),
            CALIBRATED_OP_TYPES,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"num_bins": num_bins, "num_quantized_bins": num_quantized_bins},
        )
        reader = SliceReader(inputs, batch_size)
        # one batch per collect_data call: ORT keeps every activation of a call in memory
        for begin in tqdm(range(0, len(inputs), batch_size), desc="calibration", leave=False):
            reader.set_range(begin, min(begin + batch_size, len(inputs)))
            with contextlib.redirect_stdout(io.StringIO()):
                calibrator.collect_data(reader)
        histograms = calibrator.collector.get_histogram_dict()
    return CalibrationStatistics(
        model_sha256=atomic.sha256_file(prepared_path),
        num_samples=len(inputs),
        num_bins=num_bins,
        num_quantized_bins=num_quantized_bins,
        percentile=percentile,
        guard=finding,
        histograms=histograms,
        seconds={"collect": time.perf_counter() - start},
    )


# ---------------------------------------------------------------------------- quantization


def quantize_model(
    prepared_path: str | Path,
    out_path: str | Path,
    stats: CalibrationStatistics,
    method: str = "minmax",
    *,
    quant_format: str = "qdq",
    activation_type: str = "uint8",
    weight_type: str = "int8",
    per_channel: bool = True,
    nodes_to_quantize=None,
    nodes_to_exclude=(),
) -> dict:
    """Quantize the prepared model with ``method``'s ranges; write ``out_path``; return its report."""
    _check_choice(method, METHODS, "calibration method")
    _check_choice(quant_format, FORMATS, "quantization format")
    _check_choice(activation_type, TYPES, "activation type")
    _check_choice(weight_type, TYPES, "weight type")
    if atomic.sha256_file(prepared_path) != stats.model_sha256:
        raise ValueError(
            f"the calibration statistics were collected on another model than {prepared_path}; "
            "collect them on the same prepared model you quantize"
        )
    ranges = stats.ranges(method)
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp:
        cache = atomic.save_with(Path(tmp) / "ranges.json", lambda p: save_tensors_data(ranges, p))
        entry = {}

        def write(p: Path) -> None:
            quantize_static(
                str(prepared_path),
                str(p),
                calibration_data_reader=None,
                quant_format=FORMATS[quant_format],
                per_channel=per_channel,
                activation_type=TYPES[activation_type],
                weight_type=TYPES[weight_type],
                nodes_to_quantize=list(nodes_to_quantize or []),
                nodes_to_exclude=list(nodes_to_exclude),
                calibrate_method=_ORT_METHODS[method],
                calibration_cache_path=str(cache),
            )
            if (quant_format, activation_type) == ("qdq", "uint8"):
                entry.update(exact_input.apply(p))

        atomic.save_with(out_path, write)
    onnx.checker.check_model(str(out_path))
    default_types = (activation_type, weight_type, per_channel) == ("uint8", "int8", True)
    return {
        "method": method,
        "format": quant_format,
        "activation_type": activation_type,
        "weight_type": weight_type,
        "per_channel": per_channel,
        "types_reason": TYPES_REASON if default_types else "set by the caller",
        "nodes_excluded": list(nodes_to_exclude),
        **entry,
        "size_bytes": Path(out_path).stat().st_size,
        "sha256": atomic.sha256_file(out_path),
    }


def _accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    return metrics.accuracy(labels, onnx_logits(model_path, images).argmax(axis=1))


def layer_sensitivity(
    prepared_path: str | Path,
    stats: CalibrationStatistics,
    images: np.ndarray,
    labels: np.ndarray,
    method: str = "minmax",
) -> list[dict]:
    """Quantize one weighted layer at a time; rows sorted most sensitive first.

    Each row: node, op, weight (the initializer name, e.g. ``stacks.1.conv1.weight``), accuracy
    with only that layer in INT8, its drop from FP32, and the mean |logit difference| from FP32.
    Evaluate on a validation split, not the test split.
    """
    fp32_logits = onnx_logits(prepared_path, images)
    fp32_accuracy = metrics.accuracy(labels, fp32_logits.argmax(axis=1))
    nodes = {n.name: n for n in onnx.load(str(prepared_path)).graph.node}
    rows = []
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        for node in tqdm(weighted_nodes(prepared_path), desc="layer sensitivity", leave=False):
            path = Path(tmp) / "one_layer.onnx"
            quantize_model(prepared_path, path, stats, method, nodes_to_quantize=[node])
            logits = onnx_logits(path, images)
            accuracy = metrics.accuracy(labels, logits.argmax(axis=1))
            rows.append(
                {
                    "node": node,
                    "op": nodes[node].op_type,
                    "weight": nodes[node].input[1],
                    "accuracy": accuracy,
                    "accuracy_drop": fp32_accuracy - accuracy,
                    "mean_abs_logit_diff": float(np.abs(logits - fp32_logits).mean()),
                }
            )
    return sorted(rows, key=lambda r: (-r["accuracy_drop"], -r["mean_abs_logit_diff"], r["node"]))


def quantize_within_tolerance(
    prepared_path: str | Path,
    out_path: str | Path,
    stats: CalibrationStatistics,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "minmax",
    max_accuracy_drop: float = 0.003,
    sensitivity: list[dict] | None = None,
) -> dict:
    """Keep the most sensitive layers in FP32, one more at a time, until the drop <= ``max_accuracy_drop``.

    ``max_accuracy_drop`` is a fraction (0.003 = 0.3 points), measured on ``images``/``labels``
    (a validation split). The last model tried is written to ``out_path``; the report says whether
    it met the tolerance and lists every step.
    """
    if not 0.0 <= max_accuracy_drop < 1.0:
        raise ValueError(f"max_accuracy_drop is a fraction in [0, 1), got {max_accuracy_drop}")
    order = [row["node"] for row in (sensitivity or layer_sensitivity(prepared_path, stats, images, labels, method))]
    fp32_accuracy = _accuracy(Path(prepared_path), images, labels)
    steps = []
    for k in tqdm(range(len(order) + 1), desc="accuracy-aware fallback", leave=False):
        report = quantize_model(prepared_path, out_path, stats, method, nodes_to_exclude=order[:k])
        accuracy = _accuracy(Path(out_path), images, labels)
        steps.append({"layers_in_fp32": k, "accuracy": accuracy, "accuracy_drop": fp32_accuracy - accuracy})
        if fp32_accuracy - accuracy <= max_accuracy_drop:
            break
    return {
        **report,
        "fp32_accuracy": fp32_accuracy,
        "accuracy": steps[-1]["accuracy"],
        "max_accuracy_drop": max_accuracy_drop,
        "within_tolerance": steps[-1]["accuracy_drop"] <= max_accuracy_drop,
        "steps": steps,
    }


def calibration_size_sweep(
    prepared_path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    sizes_per_class,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    *,
    method: str = "minmax",
    seed: int = 0,
    **stats_options,
) -> list[dict]:
    """Accuracy of the INT8 model calibrated on ``n`` slice images per class, for each ``n``."""
    check_calibration_slice(images, labels)
    _check_choice(method, METHODS, "calibration method")
    rows = []
    with tempfile.TemporaryDirectory(prefix="size-sweep-") as tmp:
        for per_class in tqdm(sorted(sizes_per_class), desc="calibration sizes", leave=False):
            subset = stratified_slice(labels, per_class, seed)
            stats = collect_calibration_statistics(prepared_path, images[subset], **stats_options)
            quantize_model(prepared_path, Path(tmp) / "sized.onnx", stats, method)
            preds = onnx_logits(Path(tmp) / "sized.onnx", eval_images).argmax(axis=1)
            acc = metrics.accuracy_with_ci(eval_labels, preds)
            rows.append(
                {
                    "samples_per_class": per_class,
                    "samples": len(subset),
                    "accuracy": acc["accuracy"],
                    "accuracy_ci95": [acc["ci_low"], acc["ci_high"]],
                }
            )
    return rows


def wrong_preprocessing_ablation(
    prepared_path: str | Path,
    images: np.ndarray,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    *,
    method: str = "minmax",
    stats: CalibrationStatistics | None = None,
    **stats_options,
) -> dict:
    """The "v1.0 bug": calibrate on pixels divided by 255, evaluate on raw 0-255, next to the right way.

    Returns both accuracies (with CIs) and the guard's finding, which runs warn-only here.
    ``stats`` (the correct calibration, if already collected) saves one pass.
    """
    correct = stats or collect_calibration_statistics(prepared_path, images, **stats_options)
    divided = collect_calibration_statistics(
        prepared_path, images, guard="warn", calibration_inputs=preprocess(images) / np.float32(255), **stats_options
    )
    result = {"method": method, "guard_finding": divided.guard.to_dict()}
    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        for name, variant_stats in (("correct", correct), ("divided_by_255", divided)):
            quantize_model(prepared_path, Path(tmp) / f"{name}.onnx", variant_stats, method)
            acc = metrics.accuracy_with_ci(eval_labels, onnx_logits(Path(tmp) / f"{name}.onnx", eval_images).argmax(1))
            result[name] = {"accuracy": acc["accuracy"], "accuracy_ci95": [acc["ci_low"], acc["ci_high"]]}
    return result


# ---------------------------------------------------------------------------- results


def variant_metrics(logits: np.ndarray, labels: np.ndarray, fp32_logits: np.ndarray) -> dict:
    """Accuracy (Wilson 95% CI), MCC, agreement with FP32 predictions, max/mean |logit - FP32 logit|."""
    logits, fp32_logits = np.asarray(logits), np.asarray(fp32_logits)
    if logits.shape != fp32_logits.shape or logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(
            f"logits {logits.shape} and FP32 logits {fp32_logits.shape} must both be (N, classes) "
            f"with N = {len(labels)} labels"
        )
    preds = logits.argmax(axis=1)
    acc = metrics.accuracy_with_ci(labels, preds)
    diff = np.abs(logits.astype(np.float64) - fp32_logits)
    return {
        "accuracy": acc["accuracy"],
        "accuracy_ci95": [acc["ci_low"], acc["ci_high"]],
        "n": acc["n"],
        "mcc": metrics.mcc(labels, preds, logits.shape[1]),
        "agreement_with_fp32": float(np.mean(preds == fp32_logits.argmax(axis=1))),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
    }


BEST_VARIANT_RULE = (
    "highest val accuracy; ties: highest agreement with FP32 predictions, then lowest mean "
    "|logit - FP32 logit|, then name in alphabetical order (chosen on val, reported on test)"
)


def best_variant(rows: Mapping[str, Mapping[str, float]]) -> str:
    """The best INT8 variant given its measured numbers (``variant_metrics`` rows, as in quant_report.json).

    :data:`BEST_VARIANT_RULE`: a total order on the numbers alone, so the choice never depends on
    the variants' order; the last key (the name) only decides between exactly equal rows.
    """
    if not rows:
        raise ValueError("rows is empty; pass {variant: variant_metrics(...)} for at least one INT8 variant")
    for name, row in rows.items():
        missing = [k for k in ("accuracy", "agreement_with_fp32", "mean_abs_logit_diff") if k not in row]
        if missing:
            raise ValueError(f"variant {name!r} lacks {', '.join(missing)}; pass variant_metrics(...) rows")
    return min(
        rows, key=lambda n: (-rows[n]["accuracy"], -rows[n]["agreement_with_fp32"], rows[n]["mean_abs_logit_diff"], n)
    )


def build_quant_report(
    labels: np.ndarray,
    fp32_logits: np.ndarray,
    fp32_size_bytes: int,
    variants: dict[str, tuple[np.ndarray, dict]],
    default_variant: str,
    **sections,
) -> dict:
    """quant_report.json content: FP32 and every INT8 variant, measured on the same labels.

    ``variants`` maps a name (``ort_minmax``, ``pt2e_x86``, ...) to ``(logits, info)`` where
    ``info`` carries at least ``size_bytes`` (plus method, types, sha256...). Extra keyword
    sections (calibration, sensitivity, ablation, size sweep) are stored as given. No timings.
    """
    if default_variant not in variants:
        raise ValueError(f"default_variant {default_variant!r} is not one of the variants {sorted(variants)}")
    fp32 = {**variant_metrics(fp32_logits, labels, fp32_logits), "size_bytes": int(fp32_size_bytes)}
    rows = {}
    for name, (logits, info) in variants.items():
        if "size_bytes" not in info:
            raise ValueError(f"variant {name!r} lacks size_bytes in its info")
        row = variant_metrics(logits, labels, fp32_logits)
        rows[name] = {
            **info,
            **row,
            "accuracy_drop": fp32["accuracy"] - row["accuracy"],
            "size_ratio": info["size_bytes"] / fp32_size_bytes,
        }
    return {"fp32": fp32, "variants": rows, "default_variant": default_variant, **sections}


def report_table(report: dict, timings: dict[str, float] | None = None):
    """One row per model (FP32 first); ``timings`` (variant -> calibration seconds) adds a column."""
    import pandas as pd

    columns = [
        "accuracy",
        "accuracy_ci95",
        "mcc",
        "agreement_with_fp32",
        "max_abs_logit_diff",
        "mean_abs_logit_diff",
        "size_bytes",
    ]
    rows = {"fp32": report["fp32"], **report["variants"]}
    table = pd.DataFrame({name: {c: row[c] for c in columns} for name, row in rows.items()}).T
    table["accuracy_drop_points"] = 100 * (report["fp32"]["accuracy"] - table["accuracy"].astype(float))
    if timings is not None:
        table["calibration_s"] = [timings.get(name) for name in table.index]
    return table


def report_figure(report: dict, split: str = "test"):
    """Bars: accuracy with 95% CI error bars, and model size, for FP32 and every INT8 variant. ``split`` names the
    images the accuracy is measured on, with their domain (phase 04: "target test" when the run adapts)."""
    import matplotlib.pyplot as plt

    rows = {"fp32": report["fp32"], **report["variants"]}
    names = list(rows)
    acc = np.array([rows[n]["accuracy"] for n in names])
    ci = np.array([rows[n]["accuracy_ci95"] for n in names])
    colors = [
        "tab:gray" if n == "fp32" else "tab:green" if n == report["default_variant"] else "tab:blue" for n in names
    ]
    fig, (ax_acc, ax_size) = plt.subplots(1, 2, figsize=(max(8.0, 1.4 * len(names) + 4), 3.8))
    ax_acc.bar(names, 100 * acc, yerr=100 * np.abs(ci.T - acc), capsize=4, color=colors)
    low = max(0.0, 100 * ci[:, 0].min() - 5)
    ax_acc.set(ylabel=f"{split} accuracy (%), 95% CI", ylim=(low, 100), title=f"accuracy on {split}")
    ax_size.bar(names, [rows[n]["size_bytes"] / 1024 for n in names], color=colors)
    ax_size.set(ylabel="model size (KiB)", title="size")
    for ax in (ax_acc, ax_size):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"FP32 vs INT8 on {split} (default: {report['default_variant']})")
    fig.tight_layout()
    return fig


def int8_model_name(method: str) -> str:
    """Phase 04's file name of the INT8 model of one calibration method (the one place it is built)."""
    _check_choice(method, METHODS, "calibration method")
    return f"model_int8_{method}.onnx"


@dataclass
class Variants:
    """Phase 04's ORT INT8 models: per calibration method its file, its quantization report and its logits."""

    paths: dict[str, Path]
    info: dict[str, dict]
    logits: dict[str, dict[str, np.ndarray]]  # method -> split -> logits (``helpers.models.logits_file``)

    def selection(self, val_labels: np.ndarray, fp32_val_logits: np.ndarray) -> dict:
        """:func:`best_variant` over the methods' *val* numbers (a choice is never made on the test split it
        is reported on): ``{"split": "val", "rule", "rows": {method: variant_metrics}, "chosen"}``."""
        rows = {m: variant_metrics(by_split["val"], val_labels, fp32_val_logits) for m, by_split in self.logits.items()}
        return {"split": "val", "rule": BEST_VARIANT_RULE, "rows": rows, "chosen": best_variant(rows)}


INT8_LOGITS = "int8_logits.npz"  # phase 04's val/test logits of every ORT INT8 model (logits_file.load reads it)


def quantize_variants(
    prepared: str | Path, stats: CalibrationStatistics, methods, images: Mapping[str, np.ndarray], out_dir: Path
) -> Variants:
    """One INT8 model per calibration method (same statistics) written to ``out_dir`` (:func:`int8_model_name`),
    its logits on every split of ``images`` (saved there as :data:`INT8_LOGITS`); each method's calibration
    time goes to the log (``helpers.quantize.ort``)."""
    variants = Variants({}, {}, {})
    for method in methods:
        path = Path(out_dir) / int8_model_name(method)
        variants.paths[method] = path
        variants.info[method] = quantize_model(prepared, path, stats, method)
        variants.logits[method] = {split: onnx_logits(path, x) for split, x in images.items()}
        log.info(
            "calibration_seconds", extra={"fields": {"method": method, "seconds": stats.calibration_seconds(method)}}
        )
    logits_file.save(Path(out_dir) / INT8_LOGITS, variants.logits)
    return variants


def calibrate_and_quantize(
    model_path: str | Path,
    calibration_images: np.ndarray,
    images: Mapping[str, np.ndarray],
    out_dir: Path,
    config: QuantizeConfig,
) -> tuple[CalibrationStatistics, Variants]:
    """Phase 04's ORT step: the FP32 model prepared in a scratch folder (removed on return), one calibration pass
    over the slice (guard strict: it raises before any activation is computed if the tensors are not
    ``preprocess()`` of the slice), then :func:`quantize_variants` of ``config.methods`` into ``out_dir``."""
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        prepared = prepare_model(model_path, Path(tmp) / "prepared.onnx")
        stats = collect_calibration_statistics(
            prepared, calibration_images, guard="raise", num_bins=config.num_bins, percentile=config.percentile
        )
        return stats, quantize_variants(prepared, stats, config.methods, images, out_dir)


@dataclass(frozen=True)
class Diagnostics:
    """Phase 04's diagnostics of one calibration method: the /255 ablation (on test), the calibration-size sweep
    and the per-layer sensitivity (both on val)."""

    ablation: dict
    size_sweep: list[dict]
    sensitivity: list[dict]

    def lines(self) -> str:
        """What the notebook prints: the guard's finding on the /255 slice and both test accuracies."""
        correct, divided = self.ablation["correct"]["accuracy"], self.ablation["divided_by_255"]["accuracy"]
        return (
            f"guard (warn-only) on /255 calibration: {self.ablation['guard_finding']['diagnosis']}\n"
            f"test accuracy, correct calibration {correct:.4f} vs /255 calibration {divided:.4f}"
        )

    def sections(self) -> dict:
        """Their quant_report.json sections."""
        return {
            "wrong_preprocessing_ablation": self.ablation,
            "calibration_size_sweep": self.size_sweep,
            "layer_sensitivity": self.sensitivity,
        }


def diagnose(
    model_path: str | Path,
    stats: CalibrationStatistics,
    calibration: tuple[np.ndarray, np.ndarray],
    images: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    method: str,
    config: QuantizeConfig,
) -> Diagnostics:
    """The diagnostics of ``method`` on the model :func:`calibrate_and_quantize` calibrated (prepared again in a
    scratch folder: ``quant_pre_process`` is deterministic, and :func:`quantize_model` checks the prepared file is
    the one ``stats`` was collected on): the /255 ablation on test, and on val ``config.size_sweep`` and (when
    ``config.sensitivity``) the per-layer sensitivity. The guard's warning on the /255 slice is expected: its
    finding is in the ablation."""
    options = {"num_bins": stats.num_bins, "percentile": stats.percentile}
    with tempfile.TemporaryDirectory(prefix="diagnose-") as tmp:
        prepared = prepare_model(model_path, Path(tmp) / "prepared.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ablation = wrong_preprocessing_ablation(
                prepared, calibration[0], images["test"], labels["test"], method=method, stats=stats, **options
            )
        sizes = (
            calibration_size_sweep(
                prepared,
                *calibration,
                config.size_sweep,
                images["val"],
                labels["val"],
                method=method,
                seed=config.seed,
                **options,
            )
            if config.size_sweep
            else []
        )
        layers = (
            layer_sensitivity(prepared, stats, images["val"], labels["val"], method=method)
            if config.sensitivity
            else []
        )
    return Diagnostics(ablation, sizes, layers)


def runtime_models(fp32_path: str | Path, variants: Variants) -> dict[str, tuple[Path, str]]:
    """What phase 04 evaluates on every runtime (``runtime.evaluate_models``): the FP32 file as ``fp32`` and as
    ``bf16`` (OpenVINO's bf16 hint, where the CPU has it), and every ORT INT8 model."""
    return {
        "fp32": (Path(fp32_path), "fp32"),
        "bf16": (Path(fp32_path), "bf16"),
        **{method: (path, "int8") for method, path in variants.paths.items()},
    }


def phase_report(
    labels: Mapping[str, np.ndarray],
    fp32_logits: Mapping[str, np.ndarray],
    fp32_path: str | Path,
    variants: Variants,
    selection: dict,
    stats: CalibrationStatistics,
    diagnostics: Diagnostics,
    runtimes: dict,
    others: Mapping[str, object | None] = (),
) -> dict:
    """quant_report.json of phase 04 (:func:`build_quant_report`): FP32, every ORT variant and ``others`` (a name
    -> an object with ``logits`` on test and ``describe()``, e.g. the PT2E variant; None: not run) on the test
    split (``labels`` and ``fp32_logits`` by split); the variant :func:`Variants.selection` chose on val; the
    calibration, diagnostics and runtime checks."""
    rows = {m: (variants.logits[m]["test"], variants.info[m]) for m in variants.paths}
    rows |= {name: (other.logits, other.describe()) for name, other in dict(others).items() if other is not None}
    return build_quant_report(
        labels["test"],
        fp32_logits["test"],
        Path(fp32_path).stat().st_size,
        rows,
        selection["chosen"],
        best_variant=selection["chosen"],
        selection=selection,
        ort_variants=list(variants.paths),
        calibration=stats.describe(),
        **diagnostics.sections(),
        runtimes=runtimes,
    )


def phase_summary(report: dict) -> dict:
    """Phase 04's manifest summary from its report. ``bf16_offered`` is a flag (what passed depends on the CPU);
    ``runtimes_passed`` lists the FP32 and INT8 models' runtimes."""
    models = report["runtimes"]["models"]
    return {
        "best_variant": report["best_variant"],
        "fp32_test_accuracy": report["fp32"]["accuracy"],
        "int8_test_accuracy": {name: row["accuracy"] for name, row in report["variants"].items()},
        "divided_by_255_test_accuracy": report["wrong_preprocessing_ablation"]["divided_by_255"]["accuracy"],
        "pt2e_backend": report["variants"].get("pt2e", {}).get("backend"),
        "runtimes_passed": {m: r["passed"] for m, r in models.items() if r["precision"] != "bf16"},
        "bf16_offered": bool(models.get("bf16", {}).get("passed")),
    }
