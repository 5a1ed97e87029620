"""Phase 02 end to end through the real CLI: training on digits, Keras import on CIFAR-10."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from cli_runner import calib, only_run
from helpers import data
from helpers.data.datasets import preprocess
from helpers.models import artifact as model_artifact
from helpers.models import parity
from helpers.models.architectures import predict_logits


@pytest.fixture(scope="module")
def trained_run(default_run):
    return default_run / "results" / "02_train"


def test_digits_baseline_metrics_and_reload(trained_run):
    report = json.loads((trained_run / "metrics.json").read_text())
    assert report["test"]["accuracy"] > 0.93 and report["test"]["mcc"] > 0.92
    lo, hi = report["test"]["accuracy_ci95"]
    assert lo < report["test"]["accuracy"] < hi
    model, spec = model_artifact.load(trained_run / "model.json", trained_run / "model.pt")
    assert spec["name"] == "digits_cnn"
    ds = data.load_dataset("digits")
    np.testing.assert_array_equal(predict_logits(model, ds.test_images), np.load(trained_run / "logits.npz")["test"])
    history = json.loads((trained_run / "history.json").read_text())
    assert history["loss"][-1] < history["loss"][0]


def test_onnx_export_runs_in_onnxruntime_with_parity(trained_run):
    report = json.loads((trained_run / "metrics.json").read_text())
    assert report["onnx"]["parity"]["passed"] and report["onnx"]["argmax_identical"]
    assert report["onnx"]["max_abs_logit_diff"] == report["onnx"]["parity"]["max_abs_diff"] > 0
    session = ort.InferenceSession(str(trained_run / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    ds = data.load_dataset("digits")
    for batch in (1, 7):
        logits = session.run(None, {"images": preprocess(ds.test_images[:batch])})[0]
        assert parity.compare_logits(np.load(trained_run / "logits.npz")["test"][:batch], logits).passed


def test_bad_model_params_fail_before_any_kernel(tmp_path):
    for args, message in [
        (["-p", "model_source=scratch"], "model_source must be one of train, keras_h5"),
        (["-p", "architecture=vgg"], "unknown architecture 'vgg'"),
        (["-p", "model_source=keras_h5", "-p", "h5_path=missing.h5"], "existing .h5 file"),
    ]:
        proc = calib("run", "--phases", "02", "--no-progress", "--runs-root", str(tmp_path), *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not any(tmp_path.iterdir())


def test_not_a_keras_file_is_refused_before_any_phase_with_a_clear_message(tmp_path, cifar10_dir):
    fake = tmp_path / "weights.h5"
    fake.write_bytes(b"not an hdf5 file at all")
    proc = calib(
        "run",
        "--phases",
        "02",
        "--no-progress",
        "--runs-root",
        str(tmp_path / "runs"),
        "-p",
        "dataset=cifar10",
        "-p",
        f"data_dir={cifar10_dir}",
        "-p",
        "model_source=keras_h5",
        "-p",
        f"h5_path={fake}",
        "-p",
        "val_source=test",
        check=False,
    )
    # refused by 02's precheck, before any phase (00 and 01 included) runs or a run directory exists
    assert proc.returncode == 2 and "weights.h5" in proc.stderr and "is not an HDF5 file" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_mlperf_pretrained_import_through_the_phase(tmp_path, cifar10_dir, keras_h5):
    calib(
        "run",
        "--phases",
        "02",
        "--no-progress",
        "--runs-root",
        str(tmp_path),
        "-p",
        "dataset=cifar10",
        "-p",
        f"data_dir={cifar10_dir}",
        "-p",
        "model_source=keras_h5",
        "-p",
        f"h5_path={keras_h5}",
        "-p",
        "val_source=test",
        "-p",
        "val_fraction=0.5",
    )
    results = only_run(tmp_path) / "results" / "02_train"
    report = json.loads((results / "metrics.json").read_text())
    # ~87% on the original CIFAR-10; ../shared holds a JPEG re-encoding, where this raw-pixel model scores ~75%
    assert report["test"]["n"] == 5000 and report["test"]["accuracy"] > 0.72
    assert report["onnx"]["parity"]["passed"]
    assert json.loads((results / "model.json").read_text())["kwargs"]["input_scale"] == 1.0
    assert not (results / "history.json").exists()
