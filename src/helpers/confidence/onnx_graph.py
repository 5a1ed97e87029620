"""The calibration map, accept rule and prediction sets as ONNX nodes: one self-contained model per precision.

The bundle's models output raw ``logits`` only and describe the chosen calibration map as JSON, which a
plain ONNX client (C++, Java, a browser) cannot apply. :func:`calibrated_model` appends the map and the
decision rules to a classifier's graph with standard ONNX operators of the model's own opset (>= 13),
so onnxruntime and OpenVINO -- or any runtime -- return what a client needs (:data:`OUTPUTS`):

``logits``          float32 [N, K]  unchanged (the same tensor the model computed)
``probabilities``   float32 [N, K]  softmax(map(logits)): the calibrated probabilities
``accept``          bool [N]        max probability >= accept threshold (one float, or per class: the
                                    threshold of the predicted class, argmax of ``probabilities``)
``prediction_set``  bool [N, K]     probability of class j >= set threshold (one float, or per class j):
                                    the LAC / "THR" split-conformal set, marginal or Mondrian; only when
                                    set thresholds are given

Every smooth map phase 06 may deploy (``methods.SELECTABLE``) is expressed exactly as its module's
``apply`` defines it (:func:`describe` gives the rule as text; the ops per map are in ``RULES``):

* ``identity``                       Softmax(logits)
* ``temperature_scaling``            Softmax(Div(logits, T))
* ``vector_scaling``                 Softmax(Add(Mul(logits, scale), bias))
* ``ensemble_temperature_scaling``   mix = w0 Softmax(logits / T) + w1 Softmax(logits) + w2 / K, then
                                     mix / ReduceSum(mix): ``apply`` returns log(mix), whose softmax is
                                     exactly that renormalisation (no Log, so no log(0) when w2 = 0)
* ``matrix_scaling``                 Softmax(Gemm(logits, W, b, transB=1)) = softmax(logits @ W.T + b)
* ``dirichlet``                      Softmax(Gemm(LogSoftmax(logits), W, b, transB=1))

The step maps (histogram binning, isotonic) are refused: they are baselines, never deployed.

Decisions. ``accept`` and ``prediction_set`` decide ``probability >= t`` for each threshold t. A float32
probability near 1 is coarse (its spacing below 1 is 6e-8, and a sharp map such as Dirichlet puts most
top probabilities within 1e-9 of 1, where a conformal threshold then lies too), so a threshold t > 1/2
(:data:`COMPLEMENT_ABOVE`) is decided on the complement instead: ``1 - probability``, computed as the sum
of the other classes' probabilities (MatMul with ones - identity: no cancellation, relatively accurate
however close to 1 the probability is), compared with ``1 - t``. Ops: ReduceMax (the top probability) /
ReduceMin of the complement (the top's), ArgMax + Gather for per-class accept thresholds (the threshold
of the predicted class), GreaterOrEqual / LessOrEqual, and And / Or where per-class thresholds fall on
both sides of 1/2 (onnxruntime has no boolean Where). Thresholds are stored rounded towards the safe side:
``t`` as the smallest float32 >= t, ``1 - t`` as the largest float32 <= it, so each float32 comparison is
the real comparison (a plain cast could round t down and accept a probability below it); ``1 - t`` is
first widened by :data:`FLOAT64_RESOLUTION` (2^-53), so that the graph reproduces the Python rule where
float64 itself rounds a probability to 1.0 -- e.g. a conformal threshold t = 1.0 from val scores that
were exactly 0. A threshold above 1 (+inf, :data:`ABOVE_ONE`) gets a negative bound: never met.
:func:`decision_rule` says which comparison and which constant a threshold gets.

Numerics. The graph computes in float32 (a runtime may not offer float64: OpenVINO's CPU plugin does
not), where ``CalibrationMap.apply`` computes in float64. Each float32 rounding of a calibrated logit u
is relative (~6e-8 |u|), and softmax turns a change of the logits by at most d (max norm) into a
relative change of each probability and of each complement of at most ~2d, so the difference grows with
the calibrated logits: matrix scaling / Dirichlet fitted on a nearly separable val set give |u| ~ 175 /
~3400 on the digits models. The unit tests measure it on the reference run's FP32 and INT8 models, both
runtimes: ``probabilities`` within 1.1e-6 (absolute) of the float64 map; the quantity each decision is
taken on (the probability where t <= 1/2, the complement where t > 1/2) within a relative 3e-5 of its
float64 value (above ~1e-12: deeper in the tail OpenVINO's exp loses relative precision, and it flushes
values below ~1.5e-38 to 0 -- far from any threshold a client sets). So a decision differs
from the Python rule (float64 probabilities, ``p >= t``) only where p is that close to t: a near tie.
The predicted class of a per-class accept threshold is ArgMax of the float32 probabilities (first index
on a tie, as numpy): where the top two are within the float32 error of each other it may pick the other
class than a float64 argmax would. The bundle's own Python ``predict`` rounds the calibrated logits to
float32 before its float64 softmax: a difference of the same order as the graph's. A client that
compares the float32 ``probabilities`` output with a threshold near 1 itself gets coarser decisions than
``accept`` / ``prediction_set``: use those.

OpenVINO must run the appended nodes in f32 (``INFERENCE_PRECISION_HINT=f32``, as
``helpers.runtime.sessions`` sets it): its default on a bf16-capable CPU is bf16, which would round
the calibrated logits to 8 mantissa bits.

Every node and initializer added is named ``calib/...`` (:data:`PREFIX`); the three new outputs carry
the plain names above. The result passes ``onnx.checker.check_model(full_check=True)``; the input model
(a float model or a QDQ INT8 model whose ``logits`` are float32) is not modified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers.confidence.base import CalibrationMap, method_module
from helpers.confidence.methods import SELECTABLE

PREFIX = "calib/"
LOGITS = "logits"  # helpers.models.onnx_export.OUTPUT_NAME: the output every exported model has
MIN_OPSET = 13  # Softmax / LogSoftmax over one axis, ReduceSum with its axes as an input
# a decision ``probability >= t`` with t above this is taken on the complement 1 - probability (see the module doc)
COMPLEMENT_ABOVE = 0.5
# float64's resolution just below 1: a float64 probability rounds to 1.0 when the other classes' probabilities sum
# to less than about this, so the Python rule ``p >= t`` holds where ``1 - p <= 1 - t + FLOAT64_RESOLUTION``
FLOAT64_RESOLUTION = 2.0**-53
# a threshold above 1 is met by no probability: +inf, or float64 rounding above 1 (helpers.confidence.conformal's
# class-wise rejection writes nextafter(1.0, inf) for a class whose val errors had confidence 1.0) -- "never"
ABOVE_ONE = 1.0 + 4 * 2.0**-52

OUTPUTS = {
    "logits": {
        "dtype": "float32",
        "shape": ["N", "K"],
        "meaning": "the model's raw logits, unchanged",
    },
    "probabilities": {
        "dtype": "float32",
        "shape": ["N", "K"],
        "meaning": "calibrated probabilities: softmax of the calibration map applied to the logits (float32)",
    },
    "accept": {
        "dtype": "bool",
        "shape": ["N"],
        "meaning": (
            "max calibrated probability >= the accept threshold (global, or per class: the threshold of the "
            "predicted class, argmax of probabilities); thresholds above 1/2 are decided on 1 - probability, "
            "finer near 1 than the float32 probabilities output"
        ),
    },
    "prediction_set": {
        "dtype": "bool",
        "shape": ["N", "K"],
        "meaning": (
            "class j is in the set iff its calibrated probability >= the set threshold (global, or per class j): "
            "the LAC split-conformal set, decided like accept; present only when set thresholds were given"
        ),
    },
}

# per selectable map: the ONNX operators of its probabilities, and the rule as text
RULES = {
    "identity": (("Softmax",), "probabilities = softmax(logits)"),
    "temperature_scaling": (
        ("Div", "Softmax"),
        "probabilities = softmax(logits / T) with T = params.temperature in bundle.json",
    ),
    "vector_scaling": (
        ("Mul", "Add", "Softmax"),
        "probabilities = softmax(logits * w + b) (per class) with w = params.scale, b = params.bias in bundle.json",
    ),
    "ensemble_temperature_scaling": (
        ("Div", "Softmax", "Mul", "Add", "ReduceSum"),
        "probabilities = w0 softmax(logits / T) + w1 softmax(logits) + w2 / K (renormalised) with "
        "T = params.temperature, (w0, w1, w2) = params.weights in bundle.json",
    ),
    "matrix_scaling": (
        ("Gemm", "Softmax"),
        "probabilities = softmax(logits @ W.T + b) with W = params.weights [K x K], b = params.bias in bundle.json",
    ),
    "dirichlet": (
        ("LogSoftmax", "Gemm", "Softmax"),
        "probabilities = softmax(log_softmax(logits) @ W.T + b) with W = params.weights [K x K], "
        "b = params.bias in bundle.json",
    ),
}
# the operators of the decisions (accept, prediction_set), whichever the thresholds need
DECISION_OPS = ("ReduceMax", "ReduceMin", "MatMul", "ArgMax", "Gather", "GreaterOrEqual", "LessOrEqual", "And", "Or")


def _check_method(method) -> None:
    """A deployable (smooth) map's name; else why not: an unknown name, or a step map."""
    if method in SELECTABLE:
        return
    method_module(method)  # an unknown name: its own error, listing the known ones
    raise ValueError(
        f"calibration map {method!r} is a step map (histogram binning / isotonic): a baseline phase 06 never "
        f"deploys, with no ONNX graph here; deploy one of {', '.join(SELECTABLE)}"
    )


def _as_map(calibration) -> CalibrationMap:
    """A CalibrationMap (or its ``to_dict`` form, as bundle.json stores it), deployable, its parameters checked."""
    if isinstance(calibration, Mapping):
        _check_method(calibration.get("method"))
        calibration = CalibrationMap.from_dict(dict(calibration))
    if not isinstance(calibration, CalibrationMap):
        raise TypeError(f"calibration must be a CalibrationMap or its to_dict(), got {type(calibration).__name__}")
    _check_method(calibration.method)
    method_module(calibration.method).check_params(calibration.params)
    return calibration


def describe(calibration: CalibrationMap | Mapping | str) -> str:
    """The map's rule as one line of text (``calibration``: a CalibrationMap, its dict, or a method name)."""
    if isinstance(calibration, str):
        _check_method(calibration)
        return RULES[calibration][1]
    return RULES[_as_map(calibration).method][1]


def _map_classes(calibration: CalibrationMap) -> int | None:
    """K as the map's parameters fix it (None for identity and temperature scaling)."""
    params = calibration.params
    if calibration.method == "vector_scaling":
        return len(params["scale"])
    if calibration.method in ("matrix_scaling", "dirichlet"):
        return len(params["bias"])
    return None


def _logits_output(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    outputs = list(model.graph.output)
    if [o.name for o in outputs] != [LOGITS]:
        raise ValueError(
            f"the model has outputs {[o.name for o in outputs]}; calibrated_model takes a classifier with one "
            f"output named {LOGITS!r} (a bundle model, not one that was already calibrated)"
        )
    tensor = outputs[0].type.tensor_type
    if tensor.elem_type != TensorProto.FLOAT or len(tensor.shape.dim) != 2:
        raise ValueError(
            f"output {LOGITS!r} must be float32 [N, K], got {TensorProto.DataType.Name(tensor.elem_type)} of rank "
            f"{len(tensor.shape.dim)}"
        )
    return outputs[0]


def _opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions or versions[0] < MIN_OPSET:
        raise ValueError(
            f"the model's ONNX opset is {versions[0] if versions else 'missing'}; the calibration graph needs "
            f">= {MIN_OPSET} (export with helpers.models.onnx_export, opset 18)"
        )
    return versions[0]


def _thresholds(value, k: int | None, what: str) -> np.ndarray:
    """A threshold (0-d) or per-class vector [K] of probabilities in [0, 1], validated, float64."""
    if isinstance(value, (bool, np.bool_, str)):
        raise ValueError(f"{what} must be a probability in [0, 1] or a sequence of K of them, got {value!r}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a probability in [0, 1] or a sequence of K of them, got {value!r}") from None
    if array.ndim > 1 or (array.ndim == 1 and array.size == 0):
        raise ValueError(f"{what} must be one float or a 1-D sequence of K floats, got shape {array.shape}")
    never = np.isposinf(array) | ((array > 1) & (array <= ABOVE_ONE))
    if not (((array >= 0) & (array <= 1)) | never).all():  # NaN fails both
        raise ValueError(f"{what} must lie in [0, 1] (a probability; +inf means never), got {array.tolist()}")
    if array.ndim == 1 and k is not None and array.size != k:
        raise ValueError(f"{what} has {array.size} per-class values but the model has {k} classes")
    return array


def _float32_up(value: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each value: for a float32 x, x >= result exactly when x >= value."""
    rounded = value.astype(np.float32)
    return np.where(rounded < value, np.nextafter(rounded, np.float32(np.inf)), rounded).astype(np.float32)


def _float32_down(value: np.ndarray) -> np.ndarray:
    """The largest float32 <= each value: for a float32 x, x <= result exactly when x <= value."""
    rounded = value.astype(np.float32)
    return np.where(rounded > value, np.nextafter(rounded, np.float32(-np.inf)), rounded).astype(np.float32)


def _complement_bound(t: np.ndarray) -> np.ndarray:
    """The float32 the complement 1 - p is compared with (``<=``) for ``p >= t``: 1 - t (exact in float64 for
    t >= 1/2) widened by FLOAT64_RESOLUTION, rounded down."""
    return _float32_down((1.0 - t) + FLOAT64_RESOLUTION)


def decision_rule(threshold: float) -> tuple[str, float]:
    """How the graph decides ``probability >= threshold``: ("probability >=", the float32 it compares the
    probability with) for a threshold <= COMPLEMENT_ABOVE, else ("complement <=", the float32 it compares
    the complement 1 - probability with). The comparison of a float32 with that constant is exactly the
    real comparison with ``threshold`` (or ``1 - threshold``)."""
    t = _thresholds(threshold, None, "threshold")
    if t.ndim:
        raise ValueError(f"decision_rule takes one threshold, got {threshold!r}")
    if t > COMPLEMENT_ABOVE:
        return "complement <=", float(_complement_bound(t))
    return "probability >=", float(_float32_up(t))


class _Graph:
    """Appends ``calib/``-named nodes and initializers to a graph."""

    def __init__(self, graph: onnx.GraphProto, opset: int):
        self.graph, self.opset = graph, opset
        taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
        taken |= {i.name for i in graph.initializer} | {v.name for v in graph.value_info}
        taken |= {i.name for i in graph.input}
        clash = sorted(n for n in taken if n.startswith(PREFIX) or (n in OUTPUTS and n != LOGITS))
        if clash:
            raise ValueError(
                f"the model already has tensors or nodes named {clash[:5]}: it looks calibrated already; "
                "pass the bundle's raw-logits model"
            )

    def const(self, name: str, value, dtype=np.float32) -> str:
        full = PREFIX + name
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), full))
        return full

    def node(self, op: str, inputs: Sequence[str], name: str, output: str | None = None, **attrs) -> str:
        out = output or PREFIX + name
        self.graph.node.append(helper.make_node(op, list(inputs), [out], name=PREFIX + name, **attrs))
        return out

    def reduce(self, op: str, x: str, name: str, keepdims: int) -> str:
        """ReduceMax / ReduceMin / ReduceSum over axis 1 (axes an input: ReduceSum from opset 13, the others 18)."""
        if op == "ReduceSum" or self.opset >= 18:
            axes = PREFIX + name + "_axes"
            self.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), axes))
            return self.node(op, [x, axes], name, keepdims=keepdims)
        return self.node(op, [x], name, axes=[1], keepdims=keepdims)


def _probabilities(g: _Graph, calibration: CalibrationMap, k: int | None) -> str:
    """Append the map and its softmax; the name of the ``probabilities`` tensor."""
    params, method, out = calibration.params, calibration.method, "probabilities"
    softmax = {"axis": 1}
    if method == "identity":
        return g.node("Softmax", [LOGITS], "probabilities", out, **softmax)
    if method == "temperature_scaling":
        scaled = g.node("Div", [LOGITS, g.const("temperature", params["temperature"])], "scaled")
        return g.node("Softmax", [scaled], "probabilities", out, **softmax)
    if method == "vector_scaling":
        scaled = g.node("Mul", [LOGITS, g.const("scale", params["scale"])], "scaled")
        shifted = g.node("Add", [scaled, g.const("bias", params["bias"])], "calibrated_logits")
        return g.node("Softmax", [shifted], "probabilities", out, **softmax)
    if method == "ensemble_temperature_scaling":
        w = params["weights"]
        if k is None:
            raise ValueError(
                "ensemble temperature scaling adds w2 / K: the model's logits must have a fixed class count K"
            )
        scaled = g.node("Div", [LOGITS, g.const("temperature", params["temperature"])], "scaled")
        sharp = g.node("Softmax", [scaled], "softmax_scaled", **softmax)
        plain = g.node("Softmax", [LOGITS], "softmax_logits", **softmax)
        first = g.node("Mul", [sharp, g.const("w0", w[0])], "weighted_scaled")
        second = g.node("Mul", [plain, g.const("w1", w[1])], "weighted_logits")
        both = g.node("Add", [first, second], "weighted_sum")
        mix = g.node("Add", [both, g.const("uniform", w[2] / k)], "mixture")
        total = g.reduce("ReduceSum", mix, "mixture_sum", keepdims=1)
        return g.node("Div", [mix, total], "probabilities", out)
    if method in ("matrix_scaling", "dirichlet"):
        features = LOGITS if method == "matrix_scaling" else g.node("LogSoftmax", [LOGITS], "log_softmax", **softmax)
        weights, bias = g.const("weights", params["weights"]), g.const("bias", params["bias"])
        linear = g.node("Gemm", [features, weights, bias], "calibrated_logits", transB=1)
        return g.node("Softmax", [linear], "probabilities", out, **softmax)
    raise AssertionError(f"no graph for {method}")  # _as_map admits SELECTABLE only, all handled above


class _Decisions:
    """The accept flags and prediction sets of ``probabilities``: each ``probability >= t`` is decided on the
    probability for t <= COMPLEMENT_ABOVE, else on its complement (``1 - probability``, summed from the other
    classes' probabilities: no cancellation, so relatively exact near 1), with thresholds rounded so that
    the float32 comparison is the real one (:func:`decision_rule`). Shared tensors are built on first use."""

    def __init__(self, g: _Graph, probabilities: str, k: int | None):
        self.g, self.probabilities, self.k = g, probabilities, k
        self._made: dict[str, str] = {}

    def _once(self, key: str, build) -> str:
        if key not in self._made:
            self._made[key] = build()
        return self._made[key]

    def complement(self) -> str:
        """[N, K]: sum over the other classes of their probabilities (MatMul with ones - identity)."""
        if self.k is None:
            raise ValueError(
                "a threshold above 1/2 is decided on the complement, a K x K sum: the model's logits must have a "
                "fixed class count K"
            )
        others = np.ones((self.k, self.k), dtype=np.float32) - np.eye(self.k, dtype=np.float32)
        return self._once(
            "complement",
            lambda: self.g.node("MatMul", [self.probabilities, self.g.const("others", others)], "complement"),
        )

    def _decide(self, name: str, value, complement, t: np.ndarray, index=None) -> str:
        """``value >= t`` where t <= COMPLEMENT_ABOVE, ``complement <= 1 - t`` elsewhere, as tensor ``name``.
        ``value`` / ``complement`` build their tensor when called; ``index`` ([N] class indices) picks a
        per-class threshold per row (else a [K] threshold broadcasts over the rows, a scalar over all)."""
        g, use_complement = self.g, t > COMPLEMENT_ABOVE

        def threshold(suffix: str, array: np.ndarray, dtype=np.float32) -> str:
            constant = g.const(f"{name}_{suffix}", array, dtype)
            if index is None or array.ndim == 0:
                return constant
            return g.node("Gather", [constant, index()], f"{name}_{suffix}_of_class", axis=0)

        def direct(node: str, output: str | None) -> str:
            return g.node("GreaterOrEqual", [value(), threshold("threshold", _float32_up(t))], node, output)

        def complementary(node: str, output: str | None) -> str:
            bound = threshold("complement_threshold", _complement_bound(t))
            return g.node("LessOrEqual", [complement(), bound], node, output)

        if use_complement.all():
            return complementary(name, name)
        if not use_complement.any():
            return direct(name, name)
        # mixed: (use_complement and by complement) or (not use_complement and by probability); onnxruntime has
        # no boolean Where
        by_complement = g.node(
            "And",
            [threshold("use_complement", use_complement, np.bool_), complementary(f"{name}_by_complement", None)],
            f"{name}_where_complement",
        )
        by_probability = g.node(
            "And",
            [threshold("use_probability", ~use_complement, np.bool_), direct(f"{name}_by_probability", None)],
            f"{name}_where_probability",
        )
        return g.node("Or", [by_complement, by_probability], name, name)

    def top(self) -> str:
        """[N]: the largest probability of each row."""
        return self._once("top", lambda: self.g.reduce("ReduceMax", self.probabilities, "max_probability", 0))

    def top_complement(self) -> str:
        """[N]: 1 - the largest probability, the smallest complement of each row."""
        return self._once(
            "top_complement", lambda: self.g.reduce("ReduceMin", self.complement(), "max_probability_complement", 0)
        )

    def predicted(self) -> str:
        """[N] int64: the predicted class, argmax of the probabilities (the first on a tie)."""
        return self._once(
            "predicted",
            lambda: self.g.node("ArgMax", [self.probabilities], "predicted_class", axis=1, keepdims=0),
        )

    def accept(self, t: np.ndarray) -> str:
        return self._decide("accept", self.top, self.top_complement, t, self.predicted if t.ndim else None)

    def prediction_set(self, t: np.ndarray) -> str:
        return self._decide("prediction_set", lambda: self.probabilities, self.complement, t)


def calibrated_model(
    model: onnx.ModelProto,
    calibration: CalibrationMap | Mapping,
    accept_threshold: float | Sequence[float],
    set_threshold: float | Sequence[float] | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are :data:`OUTPUTS`: the logits, the calibrated probabilities, the
    accept flags and (when ``set_threshold`` is given) the prediction sets, all in standard ONNX operators.

    ``model``: a classifier with one float32 output ``logits`` [N, K] (a bundle's fp32 or QDQ int8 model).
    ``calibration``: a smooth map (``methods.SELECTABLE``; a CalibrationMap or its ``to_dict``).
    ``accept_threshold``: one probability, or K of them (the predicted class's applies).
    ``set_threshold``: None (no ``prediction_set`` output), one probability or K of them (class j's applies).
    A threshold of +inf (or within float64 rounding above 1, see :data:`ABOVE_ONE`) is met by no probability:
    that class is never accepted / never in a set, as ``helpers.confidence.conformal`` means it.
    Raises ValueError on a step map, thresholds outside [0, 1] (other than those) or of the wrong length, or
    a model that is not a raw-logits classifier of opset >= 13.
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto (onnx.load(path)), got {type(model).__name__}")
    calibration = _as_map(calibration)
    opset = _opset(model)
    logits = _logits_output(model)
    dims = list(logits.type.tensor_type.shape.dim)
    model_k = dims[1].dim_value if dims[1].HasField("dim_value") else None
    map_k = _map_classes(calibration)
    if model_k is not None and map_k is not None and model_k != map_k:
        raise ValueError(f"the calibration map was fitted for {map_k} classes but the model outputs {model_k} logits")
    k = model_k if model_k is not None else map_k
    accept = _thresholds(accept_threshold, k, "accept_threshold")
    sets = None if set_threshold is None else _thresholds(set_threshold, k, "set_threshold")
    lengths = {v.size for v in (accept, sets) if v is not None and v.ndim == 1}
    if len(lengths) > 1:  # only where neither the model nor the map fixes K (else _thresholds checked them)
        raise ValueError(f"accept_threshold and set_threshold have different per-class lengths {sorted(lengths)}")
    k = k if k is not None or not lengths else lengths.pop()

    result = onnx.ModelProto()
    result.CopyFrom(model)
    g = _Graph(result.graph, opset)
    probabilities = _probabilities(g, calibration, k)
    decide = _Decisions(g, probabilities, k)
    decide.accept(accept)
    if sets is not None:
        decide.prediction_set(sets)

    batch = dims[0]
    batch_dim = batch.dim_param or (batch.dim_value if batch.HasField("dim_value") else None)
    shape = [batch_dim, k]
    outputs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, shape),
        helper.make_tensor_value_info("accept", TensorProto.BOOL, [batch_dim]),
    ]
    if sets is not None:
        outputs.append(helper.make_tensor_value_info("prediction_set", TensorProto.BOOL, shape))
    result.graph.output.extend(outputs)
    helper.set_model_props(
        result,
        {p.key: p.value for p in model.metadata_props}
        | {PREFIX + "method": calibration.method, PREFIX + "rule": describe(calibration)},
    )
    onnx.checker.check_model(result, full_check=True)
    return result
