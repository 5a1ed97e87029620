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
from helpers.data.deployment import open_run_deployment
from helpers.metrics.calibration import softmax
from helpers.models import parity
from helpers.run.graph import MODEL_PHASE
from helpers.run.project import project_root
from helpers.runtime import decision as runtime_decision


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
    assert doc["domain"]["name"] == "target" and "Gaussian noise" in doc["domain"]["description"]  # deployed to
    assert set(doc["source"]["manifests_sha256"]) == {
        "01_data",
        "02a_target",
        MODEL_PHASE,
        "04_quantize",
        "05_latency",
        "06_confidence",
        "07_selective",
    }
    assert (full_run / "manifests/08_bundle.json").is_file()
    decision = runtime_decision.read(full_run / "results/05_latency/runtime_decision.json")  # 05's, read by 08
    for precision, model in (("fp32", "fp32"), ("bf16", "bf16"), ("int8", quant["best_variant"])):
        offered = quant["runtimes"]["models"][model]["passed"]  # what passed phase 04's accuracy and parity checks
        assert list(decision.precisions[precision].offered) == offered
        if not offered:  # bf16 on a CPU without native bf16 (or outside its gates): absent, and why
            assert precision == "bf16" and doc["absent"]["bf16"] == decision.precisions["bf16"].absent != ""
            continue
        assert doc["models"][precision]["runtimes"] == offered
        assert doc["models"][precision]["runtime"] == decision.precisions[precision].default
        for other in set(offered) - {"onnxruntime"}:
            assert validation["runtimes"][other][precision]["passed"], validation["runtimes"][other][precision]
    events = [json.loads(line) for line in (full_run / "logs/08_bundle.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] in ("timing", "runtime_choice")]  # 08 times nothing


def test_bundle_predicts_digits_from_a_copy(full_run, tmp_path):
    """On the domain it is deployed to (the default run adapts: the noisy digits' test split)."""
    copied = shutil.copytree(full_run / "results/08_bundle/bundle", tmp_path / "bundle")  # relocatable
    images, labels = open_run_deployment(full_run, data.load_dataset("digits")).split("test")
    loaded = bundle.load(copied)
    for precision in loaded.precisions:  # fp32, int8 and bf16 where this CPU offers it
        for other in loaded.runtimes(precision)[1:]:  # every runtime offered besides the default
            assert np.mean(loaded.predict(images, precision, runtime=other).labels == labels) > 0.85
        prediction = loaded.predict(images, precision)
        assert np.mean(prediction.labels == labels) > 0.85
        accepted = prediction.accept
        assert 0.5 < accepted.mean() <= 1.0
        assert np.mean(prediction.labels[accepted] == labels[accepted]) >= np.mean(
            prediction.labels == labels
        )  # accepting by confidence does not lower accuracy


EXTERNAL_CLIENT = """
import json, sys
from pathlib import Path
import numpy as np

bundle_dir, images_file, runtime = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
images = np.load(images_file)
results = {}
if runtime == "onnxruntime":
    sys.path.insert(0, str(bundle_dir))
    import client  # the bundle's own client: numpy and onnxruntime only
    for precision in ("fp32", "int8"):
        doc, session = client.load(precision)
        results[precision] = {k: v.tolist() for k, v in client.predict(doc, session, images).items()}
else:
    import openvino as ov
    doc = json.loads((bundle_dir / "bundle.json").read_text())
    core = ov.Core()
    for precision in ("fp32", "int8"):
        model = core.compile_model(
            core.read_model(str(bundle_dir / doc["models"][precision]["file"])), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        out = model.create_infer_request().infer({0: images.astype(np.float32)})
        results[precision] = {port.get_any_name(): out[port].tolist() for port in model.outputs}
leaked = sorted(m for m in sys.modules if m == "helpers" or m.startswith("helpers."))
print(json.dumps({"results": results, "project_modules": leaked}))
"""


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_an_external_client_reproduces_the_pipeline_from_the_bundle_alone(full_run, tmp_path, runtime):
    """No import of this project: the bundle's client.py (numpy + onnxruntime), or OpenVINO on the bundle's
    files, in a fresh process on a copy of the bundle. Its calibrated accuracy, accept coverage, selective
    accuracy and prediction-set coverage are the pipeline's (phases 06 and 07) on the same test images, but for
    images within the graph's float32 tolerance of a threshold or of a near tie (counted; on the reference
    machine none), so the check holds on any CPU."""
    copied = shutil.copytree(full_run / "results/08_bundle/bundle", tmp_path / "bundle")
    images, labels = open_run_deployment(full_run, data.load_dataset("digits")).split("test")
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run(
        [sys.executable, "-c", EXTERNAL_CLIENT, str(copied), str(tmp_path / "images.npy"), runtime],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CALIB_PROJECT_ROOT")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["project_modules"] == []
    calibrated = np.load(full_run / "results/06_confidence/calibrated_logits.npz")
    threshold = json.loads((full_run / "results/07_selective/threshold.json").read_text())
    conformal = json.loads((full_run / "results/07_selective/conformal.json").read_text())
    doc = json.loads((copied / "bundle.json").read_text())
    models = {"fp32": "fp32", "int8": doc["models"]["int8"]["variant"]}
    atol = bundle.GRAPH_PROBABILITY_ATOL  # the graph computes in float32, the pipeline in float64
    rows = np.arange(len(labels))
    for precision, model in models.items():
        got = {k: np.asarray(v) for k, v in out["results"][precision].items()}
        assert set(got) == set(doc["outputs"])
        probs = softmax(calibrated[f"{model}_test"].astype(np.float64))  # what phases 06 and 07 measured
        top2 = np.sort(probs, axis=1)[:, -2:]
        flips = got["probabilities"].argmax(1) != probs.argmax(1)
        assert not flips[top2[:, 1] - top2[:, 0] > 2 * atol].any()  # the argmax may differ only at a near tie
        if model in threshold["models"]:
            report = threshold["models"][model]
            accept = probs.max(1) >= report["threshold"]
            near = np.abs(probs.max(1) - report["threshold"]) <= atol  # counted in validation.json; 0 here
            assert not (got["accept"] != accept)[~near].any(), precision
            assert abs(got["accept"].mean() - report["test"]["coverage"]) <= near.mean()
        if model in conformal["models"]:
            rules = conformal["models"][model]
            per_class = np.asarray(bundle.threshold_array(doc["models"][precision]["set_thresholds"], probs.shape[1]))
            truth_near = np.abs(probs[rows, labels] - per_class[labels]) <= atol
            covered = got["prediction_set"][rows, labels]
            assert abs(covered.mean() - rules["test"]["sets"][rules["deployed_set"]]["coverage"]) <= truth_near.mean()


def test_bundle_describes_every_output_and_rule_and_its_provenance(full_run):
    doc = json.loads((full_run / "results/08_bundle/bundle/bundle.json").read_text())
    assert set(doc["outputs"]) == {"logits", "probabilities", "accept", "prediction_set"}
    assert all({"dtype", "shape", "meaning"} <= set(spec) for spec in doc["outputs"].values())
    for model in doc["models"].values():
        assert set(model["rules"]) == {"probabilities", "accept", "prediction_set"}
        assert len(model["set_thresholds"]) == len(doc["class_names"])
    assert set(doc["source"]["git"]) == {"sha", "dirty"}
    readme = (full_run / "results/08_bundle/bundle/README.md").read_text()
    assert "client.py" in readme and all(f"`{name}`" in readme for name in doc["outputs"])
    checksums = json.loads((full_run / "results/08_bundle/bundle/checksums.json").read_text())["files"]
    assert {"README.md", "client.py", "bundle.json", "model_fp32.onnx", "model_int8.onnx"} == set(checksums)


def test_tampered_bundle_file_is_named(full_run, tmp_path):
    copied = shutil.copytree(full_run / "results/08_bundle/bundle", tmp_path / "bundle")
    model = copied / "model_int8.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    # outside its run a bundle cannot tell whether the file or checksums.json changed, and says so
    with pytest.raises(bundle.BundleError, match="model_int8.onnx does not match its sha256 in checksums.json"):
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
