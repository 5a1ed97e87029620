"""Phases 08 (bundle) and 09 (report) end to end: a full default digits run through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import bundle, data, report
from helpers.models import parity
from helpers.run.graph import MODEL_PHASE
from helpers.run.project import project_root


@pytest.fixture(scope="module")
def full_run(default_run) -> Path:
    return default_run


def test_validation_passed_and_bundle_is_complete(full_run):
    validation = json.loads((full_run / "results/08_bundle/validation.json").read_text())
    assert validation["status"] == "PASS", validation
    assert validation["fp32"]["parity"]["passed"] and validation["fp32"]["parity"]["max_tolerance_used"] <= 1
    assert validation["parity_tolerance"] == {"rel": parity.REL_TOL, "abs": parity.ABS_TOL}
    # INT8: the bundle's model is 04's file in the same runtime on the same machine, so identical outputs
    assert validation["int8"]["logit_max_abs_diff"] == 0 and validation["int8"]["argmax_mismatches"] == 0
    assert validation["int8"]["probability_max_abs_diff"] <= bundle.PROBABILITY_ATOL
    doc = json.loads((full_run / "results/08_bundle/bundle/bundle.json").read_text())
    quant = json.loads((full_run / "results/04_quantize/quant_report.json").read_text())
    assert doc["models"]["int8"]["variant"] == quant["best_variant"]
    assert doc["source"]["run_id"] == full_run.name
    assert set(doc["source"]["manifests_sha256"]) == {
        "01_data",
        MODEL_PHASE,
        "04_quantize",
        "06_confidence",
        "07_selective",
    }
    assert (full_run / "manifests/08_bundle.json").is_file()
    for precision, model in (("fp32", "fp32"), ("int8", quant["best_variant"])):
        offered = quant["runtimes"]["models"][model]["passed"]  # what passed phase 04's accuracy and parity checks
        assert doc["models"][precision]["runtimes"] == offered and doc["models"][precision]["runtime"] in offered
        for other in set(offered) - {"onnxruntime"}:
            assert validation["runtimes"][other][precision]["passed"], validation["runtimes"][other][precision]


def test_bundle_predicts_digits_from_a_copy(full_run, tmp_path):
    copied = shutil.copytree(full_run / "results/08_bundle/bundle", tmp_path / "bundle")  # relocatable
    ds = data.load_dataset("digits")
    loaded = bundle.load(copied)
    for precision in bundle.PRECISIONS:
        for other in loaded.runtimes(precision)[1:]:  # every runtime offered besides the default
            assert np.mean(loaded.predict(ds.test_images, precision, runtime=other).labels == ds.test_labels) > 0.95
        prediction = loaded.predict(ds.test_images, precision)
        assert np.mean(prediction.labels == ds.test_labels) > 0.95
        accepted = prediction.accept
        assert 0.5 < accepted.mean() <= 1.0
        assert np.mean(prediction.labels[accepted] == ds.test_labels[accepted]) >= np.mean(
            prediction.labels == ds.test_labels
        )  # accepting by confidence does not lower accuracy


def test_tampered_bundle_file_is_named(full_run, tmp_path):
    copied = shutil.copytree(full_run / "results/08_bundle/bundle", tmp_path / "bundle")
    model = copied / "model_int8.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    with pytest.raises(bundle.BundleError, match="model_int8.onnx was altered"):
        bundle.load(copied)


def test_report_has_every_section(full_run):
    page = (full_run / "results/09_report/report.html").read_text()
    assert "Every phase is present." in page
    for pid in report.SECTIONS:
        assert f'<section id="{pid}">' in page and f"Phase {pid} is missing" not in page
    pngs = sum(p.name != "isa.png" for pid in report.SECTIONS for p in (full_run / "results" / pid).rglob("*.png"))
    assert page.count("<img alt=") == pngs
    assert 'class="pass">PASS' in page


def test_report_on_a_run_with_a_missing_phase(full_run, tmp_path):
    """Phase 09 re-executed (papermill, as the runner does) in a copy of the run without 05's manifest."""
    run = shutil.copytree(full_run, tmp_path / full_run.name)
    (run / "manifests/05_latency.json").unlink()
    env = {**os.environ, "PYTHONPATH": str(project_root() / "src")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(project_root() / "notebooks/09_report.ipynb"),
            str(run / "notebooks/09_report.ipynb"),
            "-p",
            "run_dir",
            str(run),
            "--cwd",
            str(run / "notebooks"),
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    page = (run / "results/09_report/report.html").read_text()
    assert "Missing phases (not run, or their results no longer verify): 05_latency" in page
    assert "Phase 05_latency is missing from this run" in page
    summary = json.loads((run / "manifests/09_report.json").read_text())["summary"]
    assert summary["phases_missing"] == ["05_latency"]
