"""helpers.confidence.onnx_graph on the committed reference run's real digits models (FP32 and INT8 QDQ):
every selectable map fitted on the val split's logits, evaluated on the test split in real onnxruntime and
OpenVINO sessions, against CalibrationMap.apply in float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import data
from helpers.confidence import onnx_graph
from helpers.confidence.base import CalibrationMap, one_thread
from helpers.confidence.methods import SELECTABLE, fit_calibration
from helpers.metrics.calibration import softmax
from helpers.models import parity

ov = pytest.importorskip("openvino")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "runs" / "reference" / "results"
MODELS = {
    "fp32": RESULTS / "02b_adapt" / "model.onnx",
    "int8": RESULTS / "04_quantize" / "model_int8_minmax.onnx",
}
RUNTIMES = ("onnxruntime", "openvino")

# Tolerances, from the worst differences measured here (the reference run's digits models, 540 test images x 10
# classes, six maps fitted on the 126 val images, FP32 and INT8, onnxruntime and OpenVINO, float32 in the graph
# against float64 in CalibrationMap.apply):
#
# * probabilities: |graph - softmax(apply(logits))|, absolute. Worst per map (model, runtime):
#     identity 2.2e-07 (int8, ort)     temperature_scaling 2.1e-07 (int8, ort)   vector_scaling 4.9e-07 (fp32, ov)
#     ensemble 2.1e-07 (int8, ov)      matrix_scaling 1.1e-06 (fp32, ort)        dirichlet 7.3e-07 (fp32, ov)
#   worst 1.1e-06 (matrix scaling: calibrated logits up to ~175, each rounded once in float32); tolerance 5e-6,
#   ~4.5x. (The bundle's Python predict, which rounds the calibrated logits to float32 before its float64
#   softmax, differs from float64 by up to 7.5e-07 on the same data: the same order.)
# * decisions are taken on the probability p (threshold <= 1/2) or on its complement s = 1 - p summed from the
#   other classes (threshold > 1/2), each relatively accurate. Worst (|graph - float64| - 2^-52) / min(p, s):
#     identity 1.2e-06   temperature_scaling 3.2e-06   vector_scaling 8.3e-06   ensemble 2.5e-06
#     matrix_scaling 6.7e-06   dirichlet 3.0e-05 (int8, ov)
#   -> relative tolerance 1e-4 (~3.3x), plus the absolute 2^-52: float64's own resolution near 1 (where the
#   Python rule p >= t itself rounds). The absolute term also covers the deep tail, where OpenVINO's float32
#   exp loses relative precision (up to 6e-3 relative for values below 1e-12) and flushes values < ~1.5e-38 to 0.
# A decision (accept, set membership) may differ from the Python rule only where |p - t| is within that decision
# tolerance: a near tie. Measured per model and runtime: accept 0 near ties in 6480 decisions; prediction sets
# 820-879 in 64800 (1.3 %), all from Dirichlet / matrix-scaling LAC thresholds of 1.0 (val scores that were 0
# in float64) met by float64 probabilities of 1.0 (to 2^-52); decisions that actually differ: 0 and 0. The tests
# fail if near ties stop being rare (MAX_NEAR_TIE_FRACTION): a tolerance excusing everything would be vacuous.
PROBABILITY_TOL = 5e-6
DECISION_RTOL = 1e-4
DECISION_ATOL = 2.0**-52
MAX_NEAR_TIE_FRACTION = 0.05

ACCEPT_GLOBAL = 0.95
ACCEPT_PER_CLASS = [0.9, 0.5, 0.99, 0.3, 0.999, 0.8, 0.95, 0.6, 0.97, 0.85]  # both sides of 1/2: both rules
ALPHA = 0.1  # the split-conformal miscoverage of the LAC set thresholds below


def lac_threshold(probs: np.ndarray, labels: np.ndarray, alpha: float = ALPHA) -> float:
    """The LAC ("THR") set threshold 1 - q: q the ceil((n + 1)(1 - alpha))-th smallest score 1 - p_true
    (0, every class in the set, where that rank exceeds n)."""
    scores = np.sort(1.0 - probs[np.arange(len(labels)), labels])
    rank = int(np.ceil((len(scores) + 1) * (1 - alpha)))
    return 0.0 if rank > len(scores) else float(np.clip(1.0 - scores[rank - 1], 0.0, 1.0))


def mondrian_thresholds(probs: np.ndarray, labels: np.ndarray, k: int) -> list[float]:
    """One LAC threshold per class, from that class's val images."""
    return [lac_threshold(probs[labels == c], labels[labels == c]) for c in range(k)]


def session_outputs(model: onnx.ModelProto, runtime: str, images: np.ndarray, tmp: Path) -> dict[str, np.ndarray]:
    """Every output of ``model`` on ``images``, with the settings helpers.runtime.sessions opens both runtimes at."""
    if runtime == "onnxruntime":
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, {"images": images})))
    path = tmp / "model.onnx"
    onnx.save(model, str(path))
    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,
    }
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    result = compiled.create_infer_request().infer({0: images})
    return {o.get_any_name(): np.array(result[o]) for o in compiled.outputs}


@pytest.fixture(scope="module")
def splits():
    ds = data.load_dataset("digits")
    indices = data.load_splits(RESULTS / "01_data" / "splits.npz", ds)
    pairs = {name: data.split_data(ds, indices, name) for name in ("val", "test")}
    return {name: (data.preprocess(x), y) for name, (x, y) in pairs.items()}


@pytest.fixture(scope="module")
def models():
    return {name: onnx.load(str(path)) for name, path in MODELS.items()}


@pytest.fixture(scope="module")
def fitted(models, splits, tmp_path_factory):
    """Per model: every selectable map fitted on its val logits (onnxruntime), and set thresholds from val."""
    tmp = tmp_path_factory.mktemp("fit")
    val_x, val_y = splits["val"]
    out = {}
    for name, model in models.items():
        logits = session_outputs(model, "onnxruntime", val_x, tmp)["logits"]
        with one_thread():
            maps = {m: fit_calibration(m, logits, val_y, seed=0) for m in SELECTABLE}
        k = logits.shape[1]
        sets = {}
        for method, fit in maps.items():
            probs = softmax(fit.apply(logits))
            sets[method] = {"marginal": lac_threshold(probs, val_y), "mondrian": mondrian_thresholds(probs, val_y, k)}
        out[name] = {"maps": maps, "val_logits": logits, "sets": sets}
    return out


# two threshold settings per map: one global accept threshold with the marginal LAC set threshold,
# and per-class accept thresholds with the Mondrian (per-class) LAC set thresholds
VARIANTS = ("global", "per_class")


@pytest.fixture(scope="module")
def results(models, fitted, splits, tmp_path_factory):
    """(model, runtime, map, variant) -> (the graph's outputs on the test images, the thresholds used)."""
    tmp = tmp_path_factory.mktemp("run")
    test_x, _ = splits["test"]
    out = {}
    for name, model in models.items():
        for method, fit in fitted[name]["maps"].items():
            sets = fitted[name]["sets"][method]
            for variant in VARIANTS:
                accept = ACCEPT_GLOBAL if variant == "global" else ACCEPT_PER_CLASS
                set_threshold = sets["marginal"] if variant == "global" else sets["mondrian"]
                calibrated = onnx_graph.calibrated_model(model, fit, accept, set_threshold)
                for runtime in RUNTIMES:
                    outputs = session_outputs(calibrated, runtime, test_x, tmp)
                    out[name, runtime, method, variant] = (outputs, accept, set_threshold)
    return out


def reference(fit: CalibrationMap, logits: np.ndarray) -> np.ndarray:
    return softmax(fit.apply(logits))  # float64 throughout


def others(probs: np.ndarray) -> np.ndarray:
    """Per class, the sum of the other classes' probabilities: 1 - p without cancellation (float64)."""
    k = probs.shape[1]
    return probs @ (np.ones((k, k)) - np.eye(k))


def near_tie(value: np.ndarray, complement: np.ndarray, threshold) -> np.ndarray:
    """Where ``value >= threshold`` may come out either way: within the decision tolerance of min(p, 1 - p)."""
    return np.abs(value - threshold) <= DECISION_RTOL * np.minimum(value, complement) + DECISION_ATOL


def test_every_selectable_map_has_a_graph_and_a_rule(fitted):
    assert set(onnx_graph.RULES) == set(SELECTABLE)
    for method, fit in fitted["fp32"]["maps"].items():
        text = onnx_graph.describe(fit)
        assert text.startswith("probabilities = "), text
        assert onnx_graph.describe(fit.to_dict()) == onnx_graph.describe(method) == text
    assert "W.T + b" in onnx_graph.describe("matrix_scaling") and "log_softmax" in onnx_graph.describe("dirichlet")


@pytest.mark.parametrize("name", MODELS)
def test_the_graph_is_the_model_plus_calib_nodes_of_its_own_opset(models, fitted, name):
    model = models[name]
    allowed = set(onnx_graph.DECISION_OPS)
    for method, fit in fitted[name]["maps"].items():
        for accept in (ACCEPT_GLOBAL, 0.3, ACCEPT_PER_CLASS):
            calibrated = onnx_graph.calibrated_model(model, fit.to_dict(), accept, 0.1)  # bundle.json's dict form
            onnx.checker.check_model(calibrated, full_check=True)
            assert list(calibrated.opset_import) == list(model.opset_import)
            assert calibrated.ir_version == model.ir_version
            n = len(model.graph.node)
            assert list(calibrated.graph.node[:n]) == list(model.graph.node)  # the model itself untouched
            added = calibrated.graph.node[n:]
            assert all(node.name.startswith(onnx_graph.PREFIX) and node.domain == "" for node in added)
            assert len({node.name for node in added}) == len(added)
            ops = {node.op_type for node in added}
            assert set(onnx_graph.RULES[method][0]) <= ops <= set(onnx_graph.RULES[method][0]) | allowed, method
            new_inits = [i.name for i in calibrated.graph.initializer[len(model.graph.initializer) :]]
            assert new_inits and all(i.startswith(onnx_graph.PREFIX) for i in new_inits)
            outputs = {o.name: o.type.tensor_type for o in calibrated.graph.output}
            assert list(outputs) == list(onnx_graph.OUTPUTS)
            for out_name, tensor in outputs.items():
                spec = onnx_graph.OUTPUTS[out_name]
                assert onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type) == np.dtype(spec["dtype"])
                dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
                assert dims == ["batch", 10][: len(spec["shape"])], (out_name, dims)
            props = {p.key: p.value for p in calibrated.metadata_props}
            assert props["calib/method"] == method and props["calib/rule"] == onnx_graph.describe(method)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", MODELS)
def test_probabilities_are_the_python_map_within_float32_rounding(
    results, fitted, models, splits, name, runtime, tmp_path
):
    raw = session_outputs(models[name], runtime, splits["test"][0], tmp_path)["logits"]
    worst = {}
    for method, fit in fitted[name]["maps"].items():
        outputs, _, _ = results[name, runtime, method, "global"]
        np.testing.assert_array_equal(outputs["logits"], raw)  # the logits output is the model's, bit for bit
        probs = outputs["probabilities"]
        assert probs.dtype == np.float32 and probs.shape == raw.shape
        worst[method] = float(np.abs(probs - reference(fit, outputs["logits"])).max())
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        # the per-class variant differs only in its thresholds: the same probabilities
        np.testing.assert_array_equal(results[name, runtime, method, "per_class"][0]["probabilities"], probs)
    assert max(worst.values()) <= PROBABILITY_TOL, worst


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", MODELS)
def test_what_decisions_are_taken_on_is_relatively_exact(models, fitted, splits, name, runtime, tmp_path):
    """The probability and its complement (the graph's internal ``calib/complement``, exposed here as an extra
    output) against float64, relative to min(p, 1 - p): the decision tolerance."""
    worst = {}
    for method, fit in fitted[name]["maps"].items():
        calibrated = onnx_graph.calibrated_model(models[name], fit, ACCEPT_GLOBAL, [0.3, 0.9] * 5)
        calibrated.graph.output.append(
            onnx.helper.make_tensor_value_info("calib/complement", onnx.TensorProto.FLOAT, ["batch", 10])
        )
        outputs = session_outputs(calibrated, runtime, splits["test"][0], tmp_path)
        probs = reference(fit, outputs["logits"])
        complement = others(probs)
        error = np.where(
            probs <= 0.5,
            np.abs(outputs["probabilities"] - probs),
            np.abs(outputs["calib/complement"] - complement),
        )
        excess = error - DECISION_ATOL
        worst[method] = float((np.maximum(excess, 0) / np.minimum(probs, complement).clip(1e-300)).max())
    assert max(worst.values()) <= DECISION_RTOL, worst


def python_accept(probs: np.ndarray, threshold) -> np.ndarray:
    """The bundle's rule in float64: max probability >= threshold (per class: the argmax class's)."""
    t = np.asarray(threshold, dtype=np.float64)
    return probs.max(axis=1) >= (t if t.ndim == 0 else t[probs.argmax(axis=1)])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", MODELS)
def test_accept_is_the_python_rule_except_at_near_ties(results, fitted, name, runtime):
    decisions = ties = accepted = 0
    for method, fit in fitted[name]["maps"].items():
        for variant in VARIANTS:
            outputs, threshold, _ = results[name, runtime, method, variant]
            assert outputs["accept"].dtype == np.bool_ and outputs["accept"].shape == (len(outputs["logits"]),)
            probs = reference(fit, outputs["logits"])
            top, top_complement = probs.max(axis=1), others(probs).min(axis=1)
            t = np.asarray(threshold, dtype=np.float64)
            near = near_tie(top, top_complement, t if t.ndim == 0 else t[probs.argmax(axis=1)])
            if t.ndim == 1:  # the float32 argmax may pick the other class of a near-tied top two: its threshold
                second = np.sort(probs, axis=1)[:, -2]
                onnx_class = outputs["probabilities"].argmax(axis=1)
                tied = top - second <= 2 * (DECISION_RTOL * second + DECISION_ATOL)
                near |= tied & near_tie(top, top_complement, t[onnx_class])
            all_diff, explained = parity.flag_mismatches(python_accept(probs, threshold), outputs["accept"], near)
            assert all_diff == explained, (method, variant, all_diff, explained)
            decisions, ties = decisions + len(probs), ties + int(near.sum())
            accepted += int(outputs["accept"].sum())
    assert ties <= MAX_NEAR_TIE_FRACTION * decisions, (ties, decisions)
    assert 0 < accepted < decisions  # the thresholds decide something


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", MODELS)
def test_prediction_set_is_the_python_rule_except_at_near_ties(results, fitted, splits, name, runtime):
    _, labels = splits["test"]
    decisions = ties = 0
    sizes = []
    for method, fit in fitted[name]["maps"].items():
        for variant in VARIANTS:
            outputs, _, set_threshold = results[name, runtime, method, variant]
            sets = outputs["prediction_set"]
            assert sets.dtype == np.bool_ and sets.shape == outputs["logits"].shape
            probs = reference(fit, outputs["logits"])
            t = np.asarray(set_threshold, dtype=np.float64)  # scalar or [K]: broadcast over the rows
            near = near_tie(probs, others(probs), t)
            all_diff, explained = parity.flag_mismatches(probs >= t, sets, near)
            assert all_diff == explained, (method, variant, all_diff, explained)
            decisions, ties = decisions + probs.size, ties + int(near.sum())
            sizes.append(sets.sum(axis=1))
            if variant == "global" and method in ("identity", "temperature_scaling"):
                # a marginal LAC set at alpha 0.1 on a ~97 % accurate model: it covers the true class of most
                assert sets[np.arange(len(labels)), labels].mean() >= 1 - 2 * ALPHA, method
    assert ties <= MAX_NEAR_TIE_FRACTION * decisions, (ties, decisions)
    sizes = np.concatenate(sizes)
    assert (sizes == 1).any() and (sizes != 1).any()  # the sets are not all singletons: the thresholds matter


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_threshold_beyond_float32_resolution_near_1_is_still_decided_as_python_does(
    models, fitted, splits, runtime, tmp_path
):
    """Matrix scaling puts most top probabilities within 1e-8 of 1, where float32 probabilities are 1.0 or at
    most 1 - 6e-8: comparing them with t = 1 - 1e-9 cannot give the float64 decisions; the graph's complement
    rule does."""
    fit, t = fitted["fp32"]["maps"]["matrix_scaling"], 1 - 1e-9
    calibrated = onnx_graph.calibrated_model(models["fp32"], fit, t, t)
    outputs = session_outputs(calibrated, runtime, splits["test"][0], tmp_path)
    probs = reference(fit, outputs["logits"])
    expected = probs.max(axis=1) >= t
    assert 0 < expected.sum() < len(expected)
    naive = outputs["probabilities"].max(axis=1) >= np.float32(t)  # what a client comparing the output would get
    assert (naive != expected).sum() > 10
    near = near_tie(probs.max(axis=1), others(probs).min(axis=1), t)
    assert near.sum() <= 2, near.sum()
    assert ((outputs["accept"] != expected) <= near).all()
    assert ((outputs["prediction_set"] != (probs >= t)) <= near_tie(probs, others(probs), t)).all()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_without_set_thresholds_there_is_no_prediction_set(models, fitted, splits, runtime, tmp_path):
    fit = fitted["int8"]["maps"]["dirichlet"]
    calibrated = onnx_graph.calibrated_model(models["int8"], fit, ACCEPT_GLOBAL)
    assert [o.name for o in calibrated.graph.output] == ["logits", "probabilities", "accept"]
    outputs = session_outputs(calibrated, runtime, splits["test"][0][:7], tmp_path)  # another batch size
    assert set(outputs) == {"logits", "probabilities", "accept"} and outputs["accept"].shape == (7,)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_threshold_is_never_rounded_down_to_admit_a_probability_below_it(models, fitted, splits, runtime, tmp_path):
    """A threshold t <= 1/2 is stored as the smallest float32 >= t: a float32 probability p meets it exactly when
    the real p >= t, even where float32(t) == p (a plain cast would admit p < t)."""
    model, fit = models["fp32"], fitted["fp32"]["maps"]["identity"]
    images = splits["test"][0][:64]
    probs = session_outputs(onnx_graph.calibrated_model(model, fit, 0.5), runtime, images, tmp_path)["probabilities"]
    row, column = np.unravel_index(np.argmin(np.abs(probs - 0.3)), probs.shape)  # a probability well inside (0, 1/2)
    p32 = probs[row, column]
    just_above = float(p32) + float(np.spacing(p32)) / 4  # rounds to p32 as a float32, but is > p32
    assert np.float32(just_above) == p32 and just_above > float(p32)
    assert onnx_graph.decision_rule(just_above) == ("probability >=", float(np.nextafter(p32, np.float32(1))))
    assert onnx_graph.decision_rule(float(p32)) == ("probability >=", float(p32))  # a float32 stays as it is
    for threshold, expected in ((just_above, False), (float(p32), True)):
        calibrated = onnx_graph.calibrated_model(model, fit, 0.5, threshold)
        outputs = session_outputs(calibrated, runtime, images, tmp_path)
        assert outputs["probabilities"][row, column] == p32
        assert bool(outputs["prediction_set"][row, column]) is expected
    # above 1/2 the complement 1 - t, widened by float64's resolution below 1, is rounded down
    for t in (0.9, 1 - 1e-9, 1.0):
        rule, bound = onnx_graph.decision_rule(t)
        widened = (1 - t) + 2.0**-53
        assert rule == "complement <=" and np.float32(bound) == bound and 0 < bound <= widened
        assert float(np.nextafter(np.float32(bound), np.float32(1))) > widened


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_threshold_above_1_is_never_met(models, fitted, splits, runtime, tmp_path):
    """+inf, and float64 rounding above 1, as helpers.confidence.conformal's class-wise rejection writes for a
    class it never accepts: no row predicted as that class is accepted, that class is in no set -- even where
    a float64 (or float32) probability is exactly 1.0."""
    model, fit = models["fp32"], fitted["fp32"]["maps"]["dirichlet"]  # most top probabilities are 1.0
    above = float(np.nextafter(1.0, 2.0))
    accept = [np.inf, above] + [0.0] * 8
    calibrated = onnx_graph.calibrated_model(model, fit, accept, accept)
    outputs = session_outputs(calibrated, runtime, splits["test"][0], tmp_path)
    predicted = outputs["probabilities"].argmax(axis=1)
    assert (outputs["probabilities"][predicted < 2].max(axis=1) == 1.0).any()
    np.testing.assert_array_equal(outputs["accept"], predicted >= 2)
    np.testing.assert_array_equal(outputs["accept"], python_accept(reference(fit, outputs["logits"]), accept))
    assert not outputs["prediction_set"][:, :2].any() and outputs["prediction_set"][:, 2:].all()
    assert onnx_graph.decision_rule(np.inf)[1] < 0 and onnx_graph.decision_rule(above)[1] < 0


def linear_classifier(opset: int, weights: np.ndarray) -> onnx.ModelProto:
    """A real ONNX classifier at ``opset``: images [N, 8, 8, 1] -> Flatten -> Gemm -> logits [N, 10]."""
    h = onnx.helper
    graph = h.make_graph(
        [
            h.make_node("Flatten", ["images"], ["flat"], name="flatten"),
            h.make_node("Gemm", ["flat", "w"], ["logits"], name="linear"),
        ],
        "linear",
        [h.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["batch", 8, 8, 1])],
        [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        [onnx.numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_older_opset_gets_the_reductions_of_its_own_version(fitted, splits, runtime, opset, tmp_path):
    """Before opset 18 ReduceMax / ReduceMin take their axes as an attribute: the graph uses the model's opset."""
    test_x = splits["test"][0]
    weights = np.random.default_rng(0).normal(0, 0.01, (64, 10))
    model = linear_classifier(opset, weights)
    fit = fitted["fp32"]["maps"]["ensemble_temperature_scaling"]  # every kind of op but Gemm / LogSoftmax
    calibrated = onnx_graph.calibrated_model(model, fit, ACCEPT_PER_CLASS, [0.3, 0.9] * 5)
    assert [(o.domain, o.version) for o in calibrated.opset_import] == [("", opset)]
    reductions = [n for n in calibrated.graph.node if n.op_type in ("ReduceMax", "ReduceMin")]
    assert reductions and all(len(n.input) == 1 and n.attribute[0].name == "axes" for n in reductions)
    outputs = session_outputs(calibrated, runtime, test_x, tmp_path)
    probs = reference(fit, outputs["logits"])
    assert np.abs(outputs["probabilities"] - probs).max() <= PROBABILITY_TOL
    accept_near = near_tie(probs.max(axis=1), others(probs).min(axis=1), np.asarray(ACCEPT_PER_CLASS)[probs.argmax(1)])
    assert ((outputs["accept"] != python_accept(probs, ACCEPT_PER_CLASS)) <= accept_near).all()
    t = np.array([0.3, 0.9] * 5)
    assert ((outputs["prediction_set"] != (probs >= t)) <= near_tie(probs, others(probs), t)).all()


def test_bad_inputs_are_refused(models, fitted, splits):
    model, maps = models["fp32"], fitted["fp32"]["maps"]
    logits, labels = fitted["fp32"]["val_logits"], splits["val"][1]
    for step in ("histogram_binning", "isotonic"):
        with one_thread():
            step_map = fit_calibration(step, logits, labels, seed=0)
        with pytest.raises(ValueError, match="step map"):
            onnx_graph.calibrated_model(model, step_map, 0.9)
        with pytest.raises(ValueError, match="step map"):
            onnx_graph.describe(step)
    with pytest.raises(ValueError, match="unknown calibration method"):
        onnx_graph.calibrated_model(model, CalibrationMap(method="platt", params={}), 0.9)
    ts = maps["temperature_scaling"]
    with pytest.raises(ValueError, match="9 per-class values but the model has 10 classes"):
        onnx_graph.calibrated_model(model, ts, [0.9] * 9)
    with pytest.raises(ValueError, match="set_threshold has 11 per-class values"):
        onnx_graph.calibrated_model(model, ts, 0.9, [0.1] * 11)
    for bad in (1.5, -0.1, float("nan"), -float("inf"), [0.9] * 9 + [1.01], True, "0.9", [[0.9] * 10], []):
        with pytest.raises(ValueError, match="accept_threshold"):
            onnx_graph.calibrated_model(model, ts, bad)
    with pytest.raises(ValueError, match="set_threshold must lie in"):
        onnx_graph.calibrated_model(model, ts, 0.9, 2.0)
    small = CalibrationMap(method="vector_scaling", params={"scale": [1.0, 1.0, 1.0], "bias": [0.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="fitted for 3 classes but the model outputs 10"):
        onnx_graph.calibrated_model(model, small, 0.9)
    with pytest.raises(ValueError, match="temperature must be"):  # a damaged map, as from_dict would refuse it
        onnx_graph.calibrated_model(model, CalibrationMap(method="temperature_scaling", params={"temperature": 0}), 0.9)
    once = onnx_graph.calibrated_model(model, ts, 0.9)
    with pytest.raises(ValueError, match="one output named 'logits'"):
        onnx_graph.calibrated_model(once, ts, 0.9)
    with pytest.raises(ValueError, match="opset is 12"):
        onnx_graph.calibrated_model(linear_classifier(12, np.zeros((64, 10))), ts, 0.9)
    with pytest.raises(TypeError, match="onnx.ModelProto"):
        onnx_graph.calibrated_model(str(MODELS["fp32"]), ts, 0.9)
