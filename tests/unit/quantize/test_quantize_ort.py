"""ORT static INT8: real onnxruntime sessions on a briefly trained digits CNN."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization.calibrate import create_calibrator

from helpers.data.datasets import load_dataset, preprocess, stratified_slice
from helpers.models.architectures import build_model
from helpers.models.onnx_export import export_onnx, onnx_logits
from helpers.models.training import train
from helpers.quantize import ort as q
from helpers.quantize.guard import CalibrationMismatchError
from helpers.run import atomic

BINS = 512  # entropy search cost grows with the bin count; 512 > 128 keeps it a real search


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    calibration = stratified_slice(ds.train_labels, 10, seed=0)
    return {
        "calib_images": ds.train_images[calibration],
        "calib_labels": ds.train_labels[calibration],
        "images": ds.test_images,
        "labels": ds.test_labels,
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, digits) -> Path:
    """A digits CNN trained for two epochs, exported to ONNX and prepared for quantization."""
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model, _ = train(
        build_model("digits_cnn", 10),
        ds.train_images,
        ds.train_labels,
        ds.test_images[:100],
        ds.test_labels[:100],
        epochs=2,
        batch_size=64,
        lr=0.1,
        seed=0,
        progress=False,
    )
    root = tmp_path_factory.mktemp("ort")
    export_onnx(model, root / "fp32.onnx", (8, 8, 1))
    return q.prepare_model(root / "fp32.onnx", root / "prepared.onnx")


@pytest.fixture(scope="module")
def stats(prepared, digits) -> q.CalibrationStatistics:
    return q.collect_calibration_statistics(prepared, digits["calib_images"], num_bins=BINS)


@pytest.fixture(scope="module")
def fp32_logits(prepared, digits) -> np.ndarray:
    return onnx_logits(prepared, digits["images"])


def _accuracy(logits, labels) -> float:
    return float(np.mean(logits.argmax(axis=1) == labels))


def test_minmax_ranges_equal_ort_minmax_calibrator(prepared, stats, digits, tmp_path):
    calibrator = create_calibrator(
        prepared,
        q.CALIBRATED_OP_TYPES,
        augmented_model_path=str(tmp_path / "aug.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
    )
    calibrator.collect_data(q.SliceReader(preprocess(digits["calib_images"]), batch_size=16))
    reference = calibrator.compute_data()
    ours = stats.ranges("minmax")
    assert set(reference.keys()) == set(ours.keys())
    for name in reference.keys():
        expected = [float(np.ravel(v)[0]) for v in reference[name].range_value]  # ORT keeps (1,)-shaped reductions
        assert [float(v) for v in ours[name].range_value] == expected, name


def test_entropy_searches_instead_of_copying_minmax(prepared, stats, digits, tmp_path):
    minmax, entropy = stats.range_table("minmax"), stats.range_table("entropy")
    clipped = [name for name in minmax if entropy[name][1] < minmax[name][1]]
    assert clipped, "entropy calibration left every range at MinMax"
    for name in minmax:
        assert minmax[name][0] <= entropy[name][0] and entropy[name][1] <= minmax[name][1], name

    # the trap the num_bins option avoids: ORT's default entropy options reproduce MinMax exactly
    default = create_calibrator(
        prepared,
        q.CALIBRATED_OP_TYPES,
        augmented_model_path=str(tmp_path / "aug.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
    )
    default.collect_data(q.SliceReader(preprocess(digits["calib_images"]), batch_size=len(digits["calib_images"])))
    default_ranges = default.compute_data()
    assert {n: [float(v) for v in default_ranges[n].range_value] for n in minmax} == minmax


def test_percentile_ranges_lie_inside_minmax(stats):
    minmax, percentile = stats.range_table("minmax"), stats.range_table("percentile")
    assert percentile != minmax
    assert all(minmax[n][0] <= percentile[n][0] <= percentile[n][1] <= minmax[n][1] for n in minmax)


@pytest.mark.parametrize("method", q.METHODS)
def test_every_method_gives_a_u8s8_per_channel_int8_model(prepared, stats, digits, fp32_logits, tmp_path, method):
    report = q.quantize_model(prepared, tmp_path / "int8.onnx", stats, method)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [
        inits[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4
    ]
    assert weights and all(w.dtype == np.int8 for w in weights)
    activation_zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zps and all(zp.dtype == np.uint8 for zp in activation_zps)
    conv_scales = [
        inits[n.input[1]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4
    ]
    assert all(s.shape == (w.shape[0],) for s, w in zip(conv_scales, weights))  # one scale per output channel
    assert report["types_reason"] == q.TYPES_REASON and report["size_bytes"] == (tmp_path / "int8.onnx").stat().st_size
    int8_logits = onnx_logits(tmp_path / "int8.onnx", digits["images"])
    assert _accuracy(fp32_logits, digits["labels"]) - _accuracy(int8_logits, digits["labels"]) < 0.02
    assert np.mean(int8_logits.argmax(1) == fp32_logits.argmax(1)) > 0.97


def test_input_is_quantized_exactly_before_the_layout_transpose(prepared, stats, digits, tmp_path):
    """images -> Q (scale 1, zero point 0) -> DQ -> Transpose -> first layer, for every method: the pixels pass
    exactly (the model's logits equal those of the same model reading the pixels unquantized), and OpenVINO
    runs every convolution, the first included, on integers."""
    import openvino as ov

    for method in q.METHODS:
        path = tmp_path / f"{method}.onnx"
        assert q.quantize_model(prepared, path, stats, method)["input_quantization"].startswith("exact")
        model = onnx.load(str(path))
        nodes, inits = model.graph.node, {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        quant = next(n for n in nodes if "images" in n.input)
        dequant = next(n for n in nodes if quant.output[0] in n.input)
        layout = next(n for n in nodes if dequant.output[0] in n.input)
        assert (quant.op_type, dequant.op_type, layout.op_type) == ("QuantizeLinear", "DequantizeLinear", "Transpose")
        assert inits[quant.input[1]] == 1.0 and inits[quant.input[2]] == 0
        assert [n.op_type for n in nodes if layout.output[0] in n.input] == ["Mul"]  # the model's 1/255 (InputScale)
        layout.input[0] = "images"  # the same graph without the input's Q/DQ pair
        nodes.remove(quant)
        nodes.remove(dequant)
        onnx.save(model, str(tmp_path / "unquantized_input.onnx"))
        np.testing.assert_array_equal(
            onnx_logits(path, digits["images"]), onnx_logits(tmp_path / "unquantized_input.onnx", digits["images"])
        )
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(tmp_path / "minmax.onnx")), "CPU")
    convolutions = [
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    ]
    assert len(convolutions) == sum(n.op_type == "Conv" for n in onnx.load(str(prepared)).graph.node)
    assert set(convolutions) <= {"u8", "i8"}, convolutions


def test_int8_bytes_are_deterministic(prepared, digits, tmp_path):
    digests = []
    for run in range(2):
        run_stats = q.collect_calibration_statistics(prepared, digits["calib_images"], num_bins=BINS)
        digests.append(q.quantize_model(prepared, tmp_path / f"run{run}.onnx", run_stats, "entropy")["sha256"])
    assert digests[0] == digests[1] == atomic.sha256_file(tmp_path / "run0.onnx")


def test_bad_choices_list_the_options(prepared, stats, tmp_path):
    with pytest.raises(ValueError, match="minmax, entropy, percentile"):
        q.quantize_model(prepared, tmp_path / "x.onnx", stats, "kl")
    with pytest.raises(ValueError, match="qdq, qoperator"):
        q.quantize_model(prepared, tmp_path / "x.onnx", stats, quant_format="qlinear")
    with pytest.raises(ValueError, match="uint8, int8"):
        q.quantize_model(prepared, tmp_path / "x.onnx", stats, weight_type="int4")
    with pytest.raises(ValueError, match="must exceed num_quantized_bins"):
        q.collect_calibration_statistics(prepared, np.zeros((4, 8, 8, 1), np.uint8), num_bins=128)
    assert not (tmp_path / "x.onnx").exists()


def test_statistics_of_another_model_are_refused(prepared, stats, tmp_path):
    other = tmp_path / "other.onnx"
    model = onnx.load(str(prepared))
    model.doc_string = "changed"
    atomic.save_with(other, lambda p: onnx.save(model, str(p)))
    with pytest.raises(ValueError, match="another model"):
        q.quantize_model(other, tmp_path / "x.onnx", stats)


def test_models_that_fail_the_checker_are_refused(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="helpers.models.onnx_export"):
        q.prepare_model(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    model = onnx.load(str(prepared))
    model.graph.node[1].input[0] = "no_such_tensor"
    atomic.save_with(tmp_path / "broken.onnx", lambda p: onnx.save(model, str(p)))
    with pytest.raises(ValueError, match="fails onnx.checker"):
        q.prepare_model(tmp_path / "broken.onnx", tmp_path / "out.onnx")
    renamed = onnx.load(str(prepared))
    for node in renamed.graph.node:
        node.input[:] = ["x" if name == "images" else name for name in node.input]
    renamed.graph.input[0].name = "x"
    atomic.save_with(tmp_path / "renamed.onnx", lambda p: onnx.save(renamed, str(p)))
    with pytest.raises(ValueError, match="named 'images'"):
        q.prepare_model(tmp_path / "renamed.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_guard_stops_calibration_on_divided_pixels(prepared, digits):
    with pytest.raises(CalibrationMismatchError, match="divided by 255"):
        q.collect_calibration_statistics(
            prepared,
            digits["calib_images"],
            num_bins=BINS,
            calibration_inputs=preprocess(digits["calib_images"]) / np.float32(255),
        )


def test_divided_by_255_calibration_collapses_accuracy(prepared, stats, digits):
    with pytest.warns(UserWarning, match="divided by 255"):
        result = q.wrong_preprocessing_ablation(
            prepared, digits["calib_images"], digits["images"], digits["labels"], stats=stats, num_bins=BINS
        )
    assert result["guard_finding"]["diagnosis"] == "divided_by_255"
    assert result["correct"]["accuracy"] > 0.85
    assert result["divided_by_255"]["accuracy"] < 0.5  # near chance (0.1): every activation saturates


def test_sensitivity_ranks_a_damaged_layer_first_and_fallback_keeps_it_fp32(prepared, stats, digits, tmp_path):
    nodes = q.weighted_nodes(prepared)
    graph = onnx.load(str(prepared)).graph
    victim = nodes[1]
    victim_input = next(n.input[0] for n in graph.node if n.name == victim)
    histograms = dict(stats.histograms)
    counts, edges, low, high, threshold = histograms[victim_input]
    histograms[victim_input] = (counts, edges, low, high * np.float32(0.02), threshold)  # clip that input hard
    damaged = dataclasses.replace(stats, histograms=histograms, _ranges={}, seconds={"collect": 0.0})

    rows = q.layer_sensitivity(prepared, damaged, digits["images"], digits["labels"])
    assert [r["node"] for r in rows][0] == victim and sorted(r["node"] for r in rows) == sorted(nodes)
    assert rows[0]["accuracy_drop"] > 0.05

    report = q.quantize_within_tolerance(
        prepared,
        tmp_path / "fallback.onnx",
        damaged,
        digits["images"],
        digits["labels"],
        max_accuracy_drop=0.01,
        sensitivity=rows,
    )
    assert report["within_tolerance"] and report["nodes_excluded"][0] == victim
    assert report["steps"][0]["accuracy_drop"] > 0.01 >= report["steps"][-1]["accuracy_drop"]
    fallback = onnx.load(str(tmp_path / "fallback.onnx")).graph
    float_weights = {i.name for i in fallback.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert next(n for n in fallback.node if n.name == victim).input[1] in float_weights  # the victim stayed FP32
    assert report["sha256"] == atomic.sha256_file(tmp_path / "fallback.onnx")


def test_calibration_size_sweep(prepared, digits):
    rows = q.calibration_size_sweep(
        prepared,
        digits["calib_images"],
        digits["calib_labels"],
        (10, 2),
        digits["images"],
        digits["labels"],
        num_bins=BINS,
    )
    assert [(r["samples_per_class"], r["samples"]) for r in rows] == [(2, 20), (10, 100)]
    assert all(r["accuracy_ci95"][0] <= r["accuracy"] <= r["accuracy_ci95"][1] for r in rows)
    assert rows[-1]["accuracy"] > 0.85
    with pytest.raises(ValueError, match="lower samples_per_class"):
        q.calibration_size_sweep(
            prepared, digits["calib_images"], digits["calib_labels"], (11,), digits["images"], digits["labels"]
        )


def test_quant_report_table_and_figure(prepared, stats, digits, fp32_logits, tmp_path):
    info = q.quantize_model(prepared, tmp_path / "int8.onnx", stats, "minmax")
    logits = onnx_logits(tmp_path / "int8.onnx", digits["images"])
    report = q.build_quant_report(
        digits["labels"],
        fp32_logits,
        prepared.stat().st_size,
        {"ort_minmax": (logits, info)},
        "ort_minmax",
        calibration=stats.describe(),
    )
    fp32, int8 = report["fp32"], report["variants"]["ort_minmax"]
    assert fp32["agreement_with_fp32"] == 1.0 and fp32["max_abs_logit_diff"] == 0.0
    assert int8["max_abs_logit_diff"] == pytest.approx(np.abs(logits - fp32_logits).max())
    assert int8["accuracy_drop"] == pytest.approx(fp32["accuracy"] - _accuracy(logits, digits["labels"]))
    assert int8["size_ratio"] < 0.5  # int8 weights: a quarter of the float bytes plus scales and graph
    text = atomic.dumps_json(report)
    assert "seconds" not in text and json.loads(text)["calibration"]["guard"]["ok"]
    table = q.report_table(report, timings={"ort_minmax": stats.calibration_seconds("minmax")})
    assert list(table.index) == ["fp32", "ort_minmax"] and np.isnan(table.loc["fp32", "calibration_s"])
    assert q.report_figure(report).axes
    with pytest.raises(ValueError, match="not one of the variants"):
        q.build_quant_report(digits["labels"], fp32_logits, 1, {"ort_minmax": (logits, info)}, "pt2e")


def test_best_variant_is_decided_by_the_numbers_with_the_documented_tie_breaks(digits):
    labels = digits["labels"]
    fp32 = np.eye(10, dtype=np.float32)[labels] * 5
    wrong = np.eye(10, dtype=np.float32)[(labels + 1) % 10] * 5
    half = fp32.copy()
    half[::2] = wrong[::2]
    close, far = fp32 + 0.01, fp32 + 0.2  # equally accurate, equal agreement, different distance to FP32
    rows = {
        name: q.variant_metrics(logits, labels, fp32)
        for name, logits in {"a": half, "far": far, "close": close, "c": wrong}.items()
    }
    assert q.best_variant(rows) == "close"  # accuracy ties with "far": lower mean |logit diff| wins
    reordered = dict(reversed(list(rows.items())))
    assert q.best_variant(reordered) == "close"  # never the dicts' order
    twins = {"minmax": rows["close"], "entropy": dict(rows["close"])}
    assert q.best_variant(twins) == q.best_variant(dict(reversed(list(twins.items())))) == "entropy"  # then the name
    assert "alphabetical" in q.BEST_VARIANT_RULE
    with pytest.raises(ValueError, match="empty"):
        q.best_variant({})
    with pytest.raises(ValueError, match="variant 'a' lacks"):
        q.best_variant({"a": {"accuracy": 1.0}})


def test_int8_model_name_is_built_in_one_place_and_refuses_unknown_methods():
    assert q.int8_model_name("entropy") == "model_int8_entropy.onnx"
    with pytest.raises(ValueError, match="calibration method"):
        q.int8_model_name("kl")


def test_phase_steps_take_plain_values_and_keep_no_scratch(tmp_path, digits, caplog, monkeypatch):
    """Phase 04's steps without a Phase: the FP32 model prepared in a scratch folder that is gone on return, the
    INT8 models and int8_logits.npz in the given folder, calibration times in the helpers log; the diagnostics
    prepare the model again (deterministic: the statistics' sha256 check passes) and keep nothing either."""
    import logging
    import tempfile

    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = export_onnx(build_model("digits_cnn", 10).eval(), tmp_path / "model.onnx", (8, 8, 1))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where TemporaryDirectory creates its folders
    images = {"val": ds.test_images[:60], "test": ds.test_images[60:160]}
    labels = {"val": ds.test_labels[:60], "test": ds.test_labels[60:160]}
    out = tmp_path / "results"
    out.mkdir()
    config = q.check_params(
        {"calibration_methods": ["minmax", "entropy"], "num_bins": BINS, "percentile": 99.9, "size_sweep": [1]}
    )
    assert config == q.QuantizeConfig(methods=("minmax", "entropy"), num_bins=BINS, percentile=99.9, size_sweep=(1,))
    with caplog.at_level(logging.INFO, logger="helpers.quantize.ort"):
        stats, variants = q.calibrate_and_quantize(model, digits["calib_images"], images, out, config)
    assert sorted(p.name for p in out.iterdir()) == [
        "int8_logits.npz",
        "model_int8_entropy.onnx",
        "model_int8_minmax.onnx",
    ]
    assert [r.fields["method"] for r in caplog.records if r.getMessage() == "calibration_seconds"] == [
        "minmax",
        "entropy",
    ]
    assert list(scratch.iterdir()) == []
    np.testing.assert_array_equal(
        variants.logits["minmax"]["test"], onnx_logits(out / "model_int8_minmax.onnx", images["test"])
    )
    calibration = (digits["calib_images"], digits["calib_labels"])
    diagnostics = q.diagnose(model, stats, calibration, images, labels, "minmax", config)
    assert diagnostics.ablation["guard_finding"]["diagnosis"] == "divided_by_255"
    assert diagnostics.lines().startswith("guard (warn-only) on /255 calibration: divided_by_255\ntest accuracy")
    assert [r["samples_per_class"] for r in diagnostics.size_sweep] == [1] and diagnostics.sensitivity
    assert set(diagnostics.sections()) == {
        "wrong_preprocessing_ablation",
        "calibration_size_sweep",
        "layer_sensitivity",
    }
    assert list(scratch.iterdir()) == []
    selection = variants.selection(labels["val"], onnx_logits(model, images["val"]))
    runtimes = {
        "models": {
            "fp32": {"precision": "fp32", "passed": ["onnxruntime"]},
            "bf16": {"precision": "bf16", "passed": []},
        }
    }
    report = q.phase_report(
        labels,
        {"test": onnx_logits(model, images["test"])},
        model,
        variants,
        selection,
        stats,
        diagnostics,
        runtimes,
        others={"pt2e": None},
    )
    assert sorted(report["variants"]) == ["entropy", "minmax"] and report["best_variant"] == selection["chosen"]
    summary = q.phase_summary(report)
    assert summary["bf16_offered"] is False and summary["runtimes_passed"] == {"fp32": ["onnxruntime"]}
    assert summary["pt2e_backend"] is None
    assert list(q.runtime_models(model, variants)) == ["fp32", "bf16", "minmax", "entropy"]
    fig = q.report_figure(report, "target test")
    assert fig.axes[0].get_title() == "accuracy on target test" and "target test" in fig.axes[0].get_ylabel()
    assert "on target test" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"calibration_methods": ["minmax", "kl"]}, "calibration method"),
        ({"calibration_methods": []}, "non-empty list"),
        ({"num_bins": 1}, "num_bins must be >= 2"),
        ({"percentile": 0}, "percentile must be in"),
        ({"size_sweep": [0]}, "size_sweep"),
    ],
)
def test_the_typed_config_refuses_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        q.check_params(params)
