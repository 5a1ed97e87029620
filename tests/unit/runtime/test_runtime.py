"""helpers.runtime on the committed reference run's real digits models (FP32 and INT8 QDQ), both runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import data
from helpers import runtime as rt
from helpers.runtime import decision, peak

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "runs" / "reference" / "results"
FP32 = RESULTS / "02_train" / "model.onnx"
INT8 = RESULTS / "04_quantize" / "model_int8_minmax.onnx"

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def test_split():
    ds = data.load_dataset("digits")
    return data.split_data(ds, data.load_splits(RESULTS / "01_data" / "splits.npz", ds), "test")


def test_open_session_validates_before_compiling(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rt.open_session(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="runtime must be one of"):
        rt.open_session(FP32, "tensorrt")
    with pytest.raises(ValueError, match="threads and batch_size"):
        rt.open_session(FP32, threads=0)
    with pytest.raises(ValueError, match="QDQ .int8. model but precision='fp32'"):
        rt.open_session(INT8, "openvino", precision="fp32")
    with pytest.raises(ValueError, match="float model but precision='int8'"):
        rt.open_session(FP32, "onnxruntime", precision="int8")
    with pytest.raises(rt.RuntimeUnavailable, match="no bf16 kernels"):
        rt.open_session(FP32, "onnxruntime", precision="bf16")


def test_is_qdq_tells_the_two_files_apart():
    assert rt.is_qdq(INT8) and not rt.is_qdq(FP32)


@pytest.mark.parametrize("runtime", rt.RUNTIMES)
def test_logits_are_repeatable_and_fp32_runtimes_agree(runtime, test_split):
    images, labels = test_split
    session = rt.open_session(FP32, runtime, precision="fp32", threads=1, batch_size=128)
    first, second = session.logits(images), session.logits(images)
    np.testing.assert_array_equal(first, second)
    reference = rt.open_session(FP32, "onnxruntime", threads=1, batch_size=128).logits(images)
    passed, why = rt.cross_runtime_parity(reference, first, "fp32")
    assert passed, why
    assert (first.argmax(1) == labels).mean() > 0.95
    described = session.describe()
    assert described["threads"] == 1 and described["batch_size"] == 128 and described["precision"] == "fp32"
    if runtime == "openvino":
        assert described["inference_precision_hint"] == "f32"


def test_int8_on_both_runtimes_passes_the_accuracy_gate(test_split):
    images, labels = test_split
    logits = {
        r: rt.open_session(INT8, r, precision="int8", threads=1, batch_size=128).logits(images) for r in rt.RUNTIMES
    }
    rows = rt.compare_runtimes(labels, logits, "int8")
    assert rows["onnxruntime"]["agreement"] == 1.0 and rows["onnxruntime"]["max_abs_logit_diff"] == 0.0
    assert rows["openvino"]["agreement"] > 0.98
    assert rt.passing_runtimes(rows) == ["onnxruntime", "openvino"], rows["openvino"]["accuracy_check"]


def test_accuracy_gate_rejects_a_drop_over_three_tenths_of_a_point():
    labels = np.arange(1000) % 10
    good = np.eye(10)[labels]
    worse = good.copy()
    worse[:4] = np.roll(worse[:4], 1, axis=1)  # 4 of 1000 wrong: 0.4 points below
    slightly = good.copy()
    slightly[:3] = np.roll(slightly[:3], 1, axis=1)  # 0.3 points: allowed
    rows = rt.compare_runtimes(labels, {"onnxruntime": good, "openvino": worse, "other": slightly}, "int8")
    assert not rows["openvino"]["passed"] and "0.40 points below" in rows["openvino"]["accuracy_check"]
    assert rows["other"]["passed"]
    assert rt.passing_runtimes(rows) == ["onnxruntime", "other"]


def test_fp32_parity_fails_on_a_flipped_prediction():
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    passed, why = rt.cross_runtime_parity(reference, reference[:, ::-1], "fp32")
    assert not passed and "2 argmax differ" in why


def test_fastest_needs_a_clear_margin_and_keeps_the_first_on_ties():
    seconds = {"onnxruntime": np.array([1.0, 1.0]), "openvino": np.array([0.97, 0.97])}
    assert decision.fastest(seconds, ["onnxruntime", "openvino"]) == "onnxruntime"
    seconds["openvino"] = np.array([0.5, 0.6])
    assert decision.fastest(seconds, ["onnxruntime", "openvino"]) == "openvino"
    assert decision.fastest(seconds, ["onnxruntime"]) == "onnxruntime"
    with pytest.raises(ValueError, match="no runtime passed"):
        decision.fastest(seconds, [])


@pytest.mark.parametrize("runtime", rt.RUNTIMES)
def test_layer_times_show_integer_kernels_for_the_qdq_file(runtime):
    session = rt.open_session(INT8, runtime, precision="int8", threads=1, batch_size=8)
    layers = session.layer_times(rt.random_batch((8, *session.input_shape)))
    assert layers and all(layer.ms >= 0 for layer in layers)
    convs = [layer for layer in layers if "Conv" in layer.layer_type]
    assert convs and any(layer.precision == "int8" for layer in convs)


def test_openvino_profiler_counts_the_convolution_flops():
    session = rt.open_session(FP32, "openvino", precision="fp32", threads=1, batch_size=4)
    profiler = session.profiler(rt.random_batch((4, *session.input_shape)))
    weights = {i.name: i for i in onnx.load(str(FP32)).graph.initializer}
    conv_weights = sum(int(np.prod(w.dims)) for name, w in weights.items() if len(w.dims) == 4)
    conv_flops = sum(w.flops for w in profiler.work if w.layer_type == "Convolution")
    assert conv_flops >= 2 * 4 * conv_weights  # every output pixel does |weights| MACs: at least one pixel each
    profiler.call()
    assert profiler.last_ms().shape == (len(profiler.work),) and profiler.last_ms().sum() > 0


def test_int8_gemm_graph_computes_the_product_and_runs_faster_than_nothing():
    model = peak.gemm_model(64, "int8")
    onnx.checker.check_model(model)
    assert {n.op_type for n in model.graph.node} == {"QuantizeLinear", "DequantizeLinear", "MatMul"}
    assert peak.measure_gemm("onnxruntime", "int8", threads=1, n=64, repeats=2) > 1e8


def test_peaks_are_the_best_over_runtimes_and_sizes_and_say_where():
    peaks = peak.measured_peaks(1, sizes=(64, 128), repeats=2)
    assert {"fp32", "int8"} <= set(peaks)
    for precision, doc in peaks.items():
        assert doc["flops_per_s"] == doc["by_runtime"][doc["by"]] == max(doc["by_runtime"].values()), precision
        assert doc["n"] == doc["n_by_runtime"][doc["by"]] and set(doc["n_by_runtime"].values()) <= {64, 128}
        assert set(doc["by_runtime"]) | set(doc["not_measured"]) == set(rt.RUNTIMES)


@pytest.mark.skipif(not rt.support("openvino", "bf16")[0], reason="no native bf16 on this CPU")
def test_bf16_is_its_own_precision_on_openvino(test_split):
    images, _ = test_split
    bf16 = rt.open_session(FP32, "openvino", precision="bf16", threads=1, batch_size=128)
    fp32 = rt.open_session(FP32, "openvino", precision="fp32", threads=1, batch_size=128)
    assert bf16.describe()["inference_precision_hint"] == "bf16"
    diff = np.abs(bf16.logits(images) - fp32.logits(images)).max()
    assert diff > 1e-4  # bf16 really ran: its rounding is visible, unlike the f32 hint's


def test_evaluate_models_reports_both_gates_and_keeps_every_runtimes_logits():
    ds = data.load_dataset("digits")
    images, labels = data.eval_splits(ds, data.load_splits(RESULTS / "01_data" / "splits.npz", ds))
    report, logits = rt.evaluate_models(
        {"fp32": (FP32, "fp32"), "minmax": (INT8, "int8")}, images, labels["test"], threads=1, batch_size=256
    )
    assert sorted(logits) == sorted(
        rt.logits_key(r, m, s) for r in rt.RUNTIMES for m in ("fp32", "minmax") for s in ("val", "test")
    )
    assert (report["threads"], report["batch_size"], report["split"]) == (1, 256, "test")
    for name in ("fp32", "minmax"):
        rows = report["models"][name]["runtimes"]
        ort_test = logits[rt.logits_key("onnxruntime", name, "test")]
        assert rows["onnxruntime"]["accuracy"] == np.mean(ort_test.argmax(1) == labels["test"])
        assert report["models"][name]["passed"] == rt.passing_runtimes(rows)
    assert logits[rt.logits_key("openvino", "minmax", "val")].shape == (len(labels["val"]), 10)


@pytest.mark.skipif(not rt.cpu_bf16()[0], reason="no native bf16 on this CPU")
def test_bf16_is_gated_against_fp32_on_onnxruntime_with_its_measured_tolerance(test_split):
    """bf16 vs FP32 on the reference's digits model (the BF16_REL_TOL measurement): within the tolerance, the
    accuracy gate passed; a logit moved by twice the tolerance fails parity."""
    images, labels = test_split
    report, logits = rt.evaluate_models(
        {"fp32": (FP32, "fp32"), "bf16": (FP32, "bf16")}, {"test": images}, labels, threads=1, batch_size=256
    )
    bf16 = report["models"]["bf16"]
    assert (
        list(bf16["runtimes"]) == ["openvino"]
        and bf16["passed"] == ["openvino"]
        and "fp32 on onnxruntime" in (bf16["reference"])
    )
    fp32, values = (
        logits[rt.logits_key("onnxruntime", "fp32", "test")],
        logits[rt.logits_key("openvino", "bf16", "test")],
    )
    assert 1e-4 < bf16["runtimes"]["openvino"]["max_abs_logit_diff"] == np.abs(values.astype(np.float64) - fp32).max()
    assert rt.bf16_parity(fp32, values)[0]
    allowed = np.maximum(rt.BF16_ABS_TOL, rt.BF16_REL_TOL * np.abs(fp32).max(1))
    moved = values.copy()
    moved[0, 0] += 2 * allowed[0]
    passed, why = rt.bf16_parity(fp32, moved)
    assert not passed and "of the tolerance" in why
    with pytest.raises(ValueError, match="list .* as fp32 too"):
        rt.evaluate_models({"bf16": (FP32, "bf16")}, {"test": images}, labels)


def test_without_native_bf16_the_bf16_model_is_absent_and_keeps_its_table_row(test_split):
    """The capability check's answer through its parameter (a CPU without AVX512-BF16 / AMX), no OpenVINO mocked."""
    images, labels = test_split
    models = {"fp32": (FP32, "fp32"), "bf16": (FP32, "bf16")}
    report, logits = rt.evaluate_models(models, {"test": images}, labels, threads=1, native_bf16=False)
    assert report["models"]["bf16"] == {
        "precision": "bf16",
        "runtimes": {},
        "passed": [],
        "reference": "fp32 on onnxruntime (model 'fp32', the same file)",
        "absent": rt.NO_NATIVE_BF16,
    }
    assert not any("bf16" in key for key in logits)
    table = rt.runtime_table(report)
    assert list(table.index) == [("fp32", "onnxruntime"), ("fp32", "openvino"), ("bf16", "openvino")]
    assert not table.loc[("bf16", "openvino"), "passed"] and np.isnan(table.loc[("bf16", "openvino"), "accuracy"])


def test_decision_times_every_offered_runtime_and_round_trips(tmp_path):
    checks = {"fp32": (["onnxruntime", "openvino"], ""), "bf16": ([], rt.NO_NATIVE_BF16), "int8": (["onnxruntime"], "")}
    models = {"fp32": "fp32", "bf16": "bf16", "int8": "minmax"}
    chosen = decision.decide(
        {"fp32": FP32, "bf16": FP32, "int8": INT8}, checks, models, threads=1, batch_size=8, rounds=2, calls=2
    )
    assert chosen.defaults()["int8"] == "onnxruntime" and chosen.defaults()["fp32"] in ("onnxruntime", "openvino")
    assert chosen.offered() == {"fp32": ["onnxruntime", "openvino"], "int8": ["onnxruntime"]}
    assert chosen.absent() == {"bf16": rt.NO_NATIVE_BF16}
    assert set(chosen.precisions["fp32"].median_ms) == {"onnxruntime", "openvino"}
    assert all(v > 0 for v in chosen.precisions["fp32"].median_ms.values())
    assert (chosen.batch_size, chosen.threads, chosen.rounds, chosen.calls) == (8, 1, 2, 2) and "10 %" in chosen.rule
    path = decision.write(tmp_path / decision.FILE, chosen)
    assert decision.read(path) == chosen
    assert list(decision.table(chosen).index) == list(rt.PRECISIONS)
    doc = json.loads(path.read_text())
    doc["precisions"]["int8"]["default"] = "openvino"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="int8's default 'openvino' is not offered"):
        decision.read(path)
    doc["schema_version"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="re-run phase 05"):
        decision.read(path)


def test_offered_by_checks_says_why_a_precision_has_no_runtime():
    report = {
        "models": {
            "fp32": {"passed": ["onnxruntime"], "runtimes": {}},
            "bf16": {
                "passed": [],
                "runtimes": {"openvino": {"accuracy_check": "accuracy 0.9 is 1.0 points below", "parity": "p"}},
            },
        }
    }
    checks = decision.offered_by_checks(report, {"fp32": "fp32", "bf16": "bf16", "int8": "minmax"})
    assert checks["fp32"] == (["onnxruntime"], "")
    assert checks["bf16"][0] == [] and "no runtime passed phase 04's accuracy" in checks["bf16"][1]
    assert checks["int8"] == ([], "phase 04 did not evaluate 'minmax' on the runtimes")


def test_a_runtime_phase_04_passed_on_another_cpu_is_not_offered_here():
    """04 is reused across runs of one runs root: its bf16 may come from a CPU with native bf16. Where this one has
    none (the capability check's answer, through its parameter), 05 offers no bf16 and says why."""
    checks = {"fp32": (["onnxruntime"], ""), "bf16": (["openvino"], "")}
    chosen = decision.decide(
        {"fp32": FP32, "bf16": FP32},
        checks,
        {"fp32": "fp32", "bf16": "bf16"},
        threads=1,
        batch_size=4,
        rounds=1,
        calls=1,
        native_bf16=False,
    )
    assert chosen.offered() == {"fp32": ["onnxruntime"]}
    assert (
        chosen.absent()["bf16"]
        == f"phase 04 passed it on ['openvino'], but this machine cannot run it: {rt.NO_NATIVE_BF16}"
    )
