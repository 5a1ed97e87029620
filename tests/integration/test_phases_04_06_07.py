"""Phases 04 (quantize), 06 (confidence) and 07 (selective) on digits, through the real CLI and kernels.

One ``calib run --phases 07`` (which adds 01, 02, 04 and 06) feeds every test; the tests re-derive
the reported numbers from the saved artifacts with real onnxruntime sessions and the helper modules.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_runner import calib
from helpers import data, runtime
from helpers.confidence import selective
from helpers.confidence.base import CalibrationMap
from helpers.confidence.methods import METHODS
from helpers.data.deployment import open_run_deployment
from helpers.metrics import calibration as calibration_metrics
from helpers.models.onnx_export import onnx_logits
from helpers.quantize import ort as quantize_ort
from helpers.run.graph import MODEL_PHASE

PHASES = ("04_quantize", "06_confidence", "07_selective")


@pytest.fixture(scope="module")
def run(default_run) -> Path:
    return default_run


@pytest.fixture(scope="module")
def split_labels(run) -> dict:
    """Val and test of the deployment domain (the default run adapts: the noisy digits), as phases 04-07 read them."""
    images, labels = open_run_deployment(run, data.load_dataset("digits")).eval_splits()
    return {**labels, "test_images": images["test"]}


def results(run: Path, phase: str, name: str) -> Path:
    return run / "results" / phase / name


def read_json(run: Path, phase: str, name: str) -> dict:
    return json.loads(results(run, phase, name).read_text())


def test_int8_models_are_close_to_fp32_and_their_logits_are_what_onnxruntime_gives(run, split_labels):
    report = read_json(run, "04_quantize", "quant_report.json")
    int8 = np.load(results(run, "04_quantize", "int8_logits.npz"))
    methods = report["ort_variants"]
    assert methods == list(quantize_ort.METHODS)
    assert sorted(int8.files) == sorted(f"{m}_{s}" for m in methods for s in ("val", "test"))
    fp32 = report["fp32"]
    for method in methods:
        row = report["variants"][method]
        assert abs(row["accuracy"] - fp32["accuracy"]) <= 0.02 and row["agreement_with_fp32"] >= 0.97, method
        assert (row["activation_type"], row["weight_type"], row["per_channel"]) == ("uint8", "int8", True)
        assert "S8S8" in row["types_reason"]
        model = results(run, "04_quantize", f"model_int8_{method}.onnx")
        assert row["size_bytes"] == model.stat().st_size < fp32["size_bytes"] / 2
        logits = onnx_logits(model, split_labels["test_images"])
        np.testing.assert_array_equal(logits, int8[f"{method}_test"])
        assert row["accuracy"] == np.mean(logits.argmax(1) == split_labels["test"])
        assert int8[f"{method}_val"].shape == (len(split_labels["val"]), 10)
    fp32_val = np.load(results(run, MODEL_PHASE, "logits.npz"))["val"]
    recomputed = {m: quantize_ort.variant_metrics(int8[f"{m}_val"], split_labels["val"], fp32_val) for m in methods}
    assert report["selection"]["split"] == "val" and report["selection"]["rows"] == recomputed  # chosen on val
    assert report["best_variant"] == report["selection"]["chosen"] == quantize_ort.best_variant(recomputed)
    pt2e = report["variants"]["pt2e"]
    assert abs(pt2e["accuracy"] - fp32["accuracy"]) <= 0.02 and pt2e["backend"] in ("eager", "inductor")
    assert pt2e["backend"] == "inductor" or pt2e["fallback_reason"]  # the path that ran says why


def test_every_onnx_model_is_checked_on_every_runtime(run, split_labels):
    """Phase 04's cross-runtime report: real sessions of each runtime re-derive its logits and accuracies; bf16 (the
    FP32 file under OpenVINO's bf16 hint) is gated against onnxruntime FP32 where this CPU has native bf16, and is
    absent with the reason where it has not."""
    report = read_json(run, "04_quantize", "quant_report.json")
    checked = report["runtimes"]
    on_runtimes = np.load(results(run, "04_quantize", "runtime_logits.npz"))
    assert sorted(checked["models"]) == sorted(["fp32", "bf16", *report["ort_variants"]])  # (JSON sorts the keys)
    for name, entry in checked["models"].items():
        path = (
            results(run, MODEL_PHASE, "model.onnx")
            if name in ("fp32", "bf16")
            else results(run, "04_quantize", f"model_int8_{name}.onnx")
        )
        for backend in runtime.available(entry["precision"]):
            session = runtime.open_session(
                path,
                backend,
                precision=entry["precision"],
                threads=checked["threads"],
                batch_size=checked["batch_size"],
            )
            logits = session.logits(split_labels["test_images"])
            np.testing.assert_array_equal(logits, on_runtimes[runtime.logits_key(backend, name, "test")])
            row = entry["runtimes"][backend]
            assert row["accuracy"] == np.mean(logits.argmax(1) == split_labels["test"])
        assert entry["passed"] == runtime.passing_runtimes(entry["runtimes"])
        assert ("onnxruntime" in entry["passed"]) == (name != "bf16")
    bf16 = checked["models"]["bf16"]
    if runtime.cpu_bf16()[0]:
        fp32 = on_runtimes[runtime.logits_key("onnxruntime", "fp32", "test")]
        row = bf16["runtimes"]["openvino"]
        assert row["passed"] == runtime.bf16_parity(fp32, on_runtimes[runtime.logits_key("openvino", "bf16", "test")])[
            0
        ] and (row["accuracy_drop_points"] <= 100 * runtime.ACCURACY_MARGIN)
        assert summary_of(run)["bf16_offered"] == bool(bf16["passed"])
    else:
        assert bf16["runtimes"] == {} and bf16["absent"] and not summary_of(run)["bf16_offered"]


def summary_of(run: Path) -> dict:
    return json.loads((run / "manifests" / "04_quantize.json").read_text())["summary"]


def test_calibration_guard_passes_and_the_divided_by_255_ablation_collapses_accuracy(run):
    report = read_json(run, "04_quantize", "quant_report.json")
    assert report["calibration"]["guard"]["ok"] and report["calibration"]["samples"] == 200
    ablation = report["wrong_preprocessing_ablation"]
    assert ablation["guard_finding"]["diagnosis"] == "divided_by_255"
    assert ablation["correct"]["accuracy"] > 0.9
    assert ablation["divided_by_255"]["accuracy"] < 0.5  # near chance (10 classes), far below the right calibration
    assert [r["samples_per_class"] for r in report["calibration_size_sweep"]] == [1, 5, 20]
    assert {r["op"] for r in report["layer_sensitivity"]} <= {"Conv", "Gemm", "MatMul"}
    assert "seconds" not in json.dumps(report)  # timings go to logs, never into results


def test_every_map_fitted_on_val_the_chosen_one_applied_and_measured_honestly(run, split_labels):
    metrics = read_json(run, "06_confidence", "calibration_metrics.json")
    calibrated = np.load(results(run, "06_confidence", "calibrated_logits.npz"))
    raw = {"fp32": np.load(results(run, MODEL_PHASE, "logits.npz"))}
    int8 = np.load(results(run, "04_quantize", "int8_logits.npz"))
    assert set(metrics) == {"fp32", *read_json(run, "04_quantize", "quant_report.json")["ort_variants"]}
    for model in metrics:
        doc = read_json(run, "06_confidence", f"{model}/scaling_params.json")
        assert set(doc["candidates"]) == set(METHODS)  # the default runs every method
        assert all(isinstance(c["converged"], bool) and c["seed"] == 0 for c in doc["candidates"].values())
        chosen = CalibrationMap.from_dict(doc)
        assert doc["method"] == doc["selection"]["chosen"] == metrics[model]["chosen_method"] and chosen.converged
        assert doc["selection"]["cv_nll"][chosen.method] == min(
            doc["selection"]["cv_nll"][m] for m in doc["selection"]["eligible"]
        )
        for split in ("val", "test"):
            logits = raw["fp32"][split] if model == "fp32" else int8[f"{model}_{split}"]
            np.testing.assert_array_equal(calibrated[f"{model}_{split}"], chosen.apply(logits).astype(np.float32))
        val_nll = calibration_metrics.negative_log_likelihood(calibrated[f"{model}_val"], split_labels["val"])
        assert val_nll == pytest.approx(doc["calibration_loss"]["after"], rel=1e-5)
        post = metrics[model]["post_calibration"]
        assert post == metrics[model]["methods"][chosen.method]
        assert post["ece"] == calibration_metrics.expected_calibration_error(
            calibrated[f"{model}_test"], split_labels["test"]
        )
        assert post["accuracy"] == np.mean(calibrated[f"{model}_test"].argmax(1) == split_labels["test"])
        assert 0 < post["null"]["p_value"] <= 1 and "at this sample size" in post["null"]["verdict"]
    fp32 = metrics["fp32"]
    assert fp32["improvement"]["ece_reduction"] == pytest.approx(
        fp32["pre_calibration"]["ece"] - fp32["post_calibration"]["ece"]
    )


def test_every_map_fit_time_is_in_the_phase_log(run):
    """The helpers' calibration_fit events reach logs/06_confidence.jsonl through the phase's log handler:
    one per model and map, with its wall time (timings go to logs, never to results)."""
    events = [json.loads(line) for line in (run / "logs" / "06_confidence.jsonl").read_text().splitlines()]
    fits = [e for e in events if e["event"] == "calibration_fit"]
    models = read_json(run, "06_confidence", "calibration_metrics.json")
    assert sorted((e["model"], e["method"]) for e in fits) == sorted((m, method) for m in models for method in METHODS)
    assert all(e["seconds"] >= 0 and e["source"] == "helpers.confidence.calibrate" for e in fits)
    started = next(i for i, e in enumerate(events) if e["event"] == "phase_started")
    assert all(events.index(e) > started for e in fits)


def test_threshold_reproduces_its_val_metrics_and_test_evaluation(run, split_labels):
    doc = read_json(run, "07_selective", "threshold.json")
    calibrated = np.load(results(run, "06_confidence", "calibrated_logits.npz"))
    best_int8 = read_json(run, "04_quantize", "quant_report.json")["best_variant"]
    assert doc["selective_model"] == "fp32" and sorted(doc["models"]) == sorted({"fp32", best_int8})
    sweep = pd.read_csv(results(run, "07_selective", "threshold_sweep.csv"))
    for model, report in doc["models"].items():
        assert report["criterion"] == "max_mcc" and report["met"]
        val = selective.evaluate_threshold(
            calibrated[f"{model}_val"], split_labels["val"], report["threshold"], n_boot=1
        )
        assert val["mcc"] == pytest.approx(report["val"]["mcc"], abs=1e-12)
        assert val["coverage"] == report["val"]["coverage"]
        assert report["val"]["mcc"] == pytest.approx(sweep.loc[sweep["model"] == model, "mcc"].max(), abs=1e-12)
        test = selective.evaluate_threshold(
            calibrated[f"{model}_test"], split_labels["test"], report["threshold"], n_boot=1000, seed=0
        )
        assert report["test"] == test
        assert report["test_aurc"] == selective.aurc(calibrated[f"{model}_test"], split_labels["test"])


def test_figures_and_manifests(run):
    for phase, figures in (
        ("04_quantize", ["quant.png"]),
        ("06_confidence", ["reliability.png", "confidence.png"]),
        ("07_selective", ["risk_coverage.png", "threshold_sweep.png"]),
    ):
        for name in figures:
            assert results(run, phase, name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert "all manifests verify" in calib("verify", str(run)).stdout


@pytest.mark.slow
def test_rerunning_the_three_phases_gives_byte_identical_results(run, tmp_path):
    again = tmp_path / run.name
    shutil.copytree(run, again)
    for phase in PHASES:
        (again / "manifests" / f"{phase}.json").unlink()
    calib("run", "--resume", str(again), "--no-progress")
    for phase in PHASES:
        first = sorted(p.relative_to(run) for p in (run / "results" / phase).rglob("*") if p.is_file())
        second = sorted(p.relative_to(again) for p in (again / "results" / phase).rglob("*") if p.is_file())
        assert first == second and first
        for rel in first:
            assert (run / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_calibration_tensors_are_bit_identical_to_evaluation_preprocessing(run):
    """What the ORT calibrator is fed (the deployment domain's slice through the reader) is exactly what evaluation
    feeds: the same images, preprocessed in evaluation-sized batches."""
    from helpers.quantize import guard as calibration_guard
    from helpers.quantize import ort as quantize_ort

    images, _ = open_run_deployment(run, data.load_dataset("digits")).split("calibration")
    reader = quantize_ort.SliceReader(data.preprocess(images), batch_size=64)
    calibration = np.concatenate([batch["images"] for batch in iter(reader.get_next, None)])
    evaluation = np.concatenate([data.preprocess(images[s : s + 500]) for s in range(0, len(images), 500)])
    assert calibration.dtype == evaluation.dtype == np.float32
    assert calibration.tobytes() == evaluation.tobytes()
    assert calibration_guard.check_calibration_inputs(calibration, images).ok
