"""Phases 02a/02b end to end: LoRA in the default run, label-free modes and bad input in real kernels.

Cost on 2 idle cores: the default run is shared; the adabn re-run of 02a+02b is two kernels (~40 s);
the failing LoRA target is one kernel (~20 s, the PEFT import), label-free LoRA and its collapse two
(~40 s); the prechecks start no kernel.
"""

from __future__ import annotations

import json
import shutil

import nbformat
import numpy as np
import pytest
import yaml

from cli_runner import calib
from helpers import data
from helpers.models.onnx_export import onnx_logits
from helpers.run import manifest
from helpers.run.atomic import sha256_file
from helpers.run.graph import get_phase
from helpers.run.params import RUN_DIR_PARAM, notebook_parameters
from helpers.run.runner import PhaseFailed, kernel_environment, run_phase


def rerun(run_dir, phase_id: str, **changes) -> dict:
    """Re-run one phase of a copied run in a real kernel with changed params (as `calib run` would)."""
    config = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    spec = get_phase(phase_id)
    defaults = {k: v for k, v in notebook_parameters(spec.notebook).items() if k != RUN_DIR_PARAM}
    params = {**defaults, **config[phase_id], **changes}
    with kernel_environment():
        key = manifest.input_key(phase_id, params, spec.notebook, list(spec.upstream), run_dir)
    run_phase(run_dir, spec, params, key, progress=False, cell_timeout=None)
    return params


def test_default_run_adapts_with_lora_and_every_consumer_gets_the_merged_model(default_run):
    adapt = default_run / "results/02b_adapt"
    doc = json.loads((adapt / "adaptation.json").read_text())
    assert doc["adaptation"] == "lora" and doc["status"] == "PASS" and not doc["passed_through"]
    assert doc["merge_parity"]["max_abs_logit_diff"] <= doc["merge_parity"]["tolerance"]
    assert doc["merge_parity"]["argmax_differ"] == 0 and doc["adapter_load_back"]["status"] == "PASS"
    assert 0 < doc["trainable_parameters"]["percent"] < 15
    target, source = doc["accuracy"]["target"], doc["accuracy"]["source"]
    assert target["after"]["accuracy"] > target["before"]["accuracy"] + 0.05  # the visible effect
    assert source["after"]["n"] == target["after"]["n"]
    assert len(doc["history"]["loss"]) == doc["config"]["epochs"]
    # the adapted model differs from 02's and is the one the bundle ships
    assert sha256_file(adapt / "model.pt") != sha256_file(default_run / "results/02_train/model.pt")
    # the bundle ships it with its calibration and rules appended: the same logits, bit for bit
    shipped = default_run / "results/08_bundle/bundle/model_fp32.onnx"
    images = data.load_dataset("digits").test_images[:64]
    np.testing.assert_array_equal(onnx_logits(shipped, images), onnx_logits(adapt / "model.onnx", images))
    assert not np.array_equal(
        onnx_logits(shipped, images), onnx_logits(default_run / "results/02_train/model.onnx", images)
    )
    record = json.loads((default_run / "manifests/02b_adapt.json").read_text())
    assert {"model.pt", "adapter.pt", "model.onnx", "adaptation.json"} <= set(record["files"])
    events = [json.loads(line)["event"] for line in (default_run / "logs/02b_adapt.jsonl").read_text().splitlines()]
    assert events.count("adaptation_epoch") == doc["config"]["epochs"] and "sealed" in events


def test_label_free_adabn_in_a_real_kernel(default_run, tmp_path):
    run = tmp_path / default_run.name
    shutil.copytree(default_run, run)
    rerun(run, "02a_target", adaptation="adabn")
    rerun(run, "02b_adapt", adaptation="adabn")
    doc = json.loads((run / "results/02b_adapt/adaptation.json").read_text())
    assert doc["adaptation"] == "adabn" and doc["status"] == "PASS" and doc["trainable_parameters"]["count"] == 0
    assert doc["accuracy"]["target"]["after"]["accuracy"] > doc["accuracy"]["target"]["before"]["accuracy"] + 0.05
    assert doc["merge_parity"]["max_abs_logit_diff"] == 0.0  # nothing to merge: the same module
    assert not manifest.verify(run, "02b_adapt")
    # the logits later phases read are the adapted model's on the pipeline's splits
    logits = np.load(run / "results/02b_adapt/logits.npz")
    assert not np.array_equal(logits["test"], np.load(run / "results/02_train/logits.npz")["test"])


def test_label_free_lora_in_a_real_kernel_and_a_collapse_that_stops_the_phase(default_run, tmp_path):
    """lora_objective=shot reads no label file (the graph refuses them) and still gains on the target;
    an entropy fit at 100x the learning rate collapses, and the phase fails before saving a model."""
    run = tmp_path / default_run.name
    shutil.copytree(default_run, run)
    rerun(run, "02b_adapt", lora_objective="shot")
    doc = json.loads((run / "results/02b_adapt/adaptation.json").read_text())
    assert doc["label_free"] and doc["config"]["objective"] == "shot" and doc["status"] == "PASS"
    assert doc["accuracy"]["target"]["after"]["accuracy"] > doc["accuracy"]["target"]["before"]["accuracy"] + 0.05
    guard = doc["collapse_guard"]
    assert len(guard["after"]) == doc["config"]["epochs"] and guard["after"][-1]["effective_classes"] > guard["limit"]
    assert doc["adapter_load_back"]["status"] == "PASS" and not manifest.verify(run, "02b_adapt")
    notebook = nbformat.read(run / "notebooks/02b_adapt.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "collapse guard: " in printed and "effective predicted classes after" in printed
    with pytest.raises(PhaseFailed, match="lora \\(entropy\\) collapsed its predictions after epoch 1"):
        rerun(run, "02b_adapt", lora_objective="entropy", adapt_lr=1.0)
    assert manifest.read_manifest(run, "02b_adapt") is None
    assert not (run / "results/02b_adapt/model.pt").exists()


def test_unknown_target_module_fails_the_phase_before_training_and_leaves_no_manifest(default_run, tmp_path):
    run = tmp_path / default_run.name
    shutil.copytree(default_run, run)
    with pytest.raises(PhaseFailed, match="unknown LoRA target module.*'conv9'"):
        rerun(run, "02b_adapt", lora_target_modules=["conv9"])
    assert manifest.read_manifest(run, "02b_adapt") is None
    events = [json.loads(line)["event"] for line in (run / "logs/02b_adapt.jsonl").read_text().splitlines()]
    assert (
        events.count("adaptation_epoch")
        == json.loads((default_run / "results/02b_adapt/adaptation.json").read_text())["config"]["epochs"]
    )  # the old run's only


def test_bad_adaptation_params_fail_before_any_run_directory_exists(tmp_path):
    root = tmp_path / "runs"
    cases = [
        (["-p", "adaptation=finetune"], "unknown adaptation mode 'finetune'; choose one of none, lora, adabn, tent"),
        (["-p", "lora_rank=0"], "lora_rank must be a positive integer, got 0"),
        (["-p", "lora_dropout=1.5"], "lora_dropout must be in [0, 1)"),
        (["-p", "lora_objective=tent"], "unknown lora_objective 'tent'; choose one of supervised, shot, entropy"),
    ]
    for args, message in cases:
        proc = calib("run", "--no-progress", "--runs-root", str(root), *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert not root.exists() or not any(root.iterdir())


def test_none_passes_the_model_through_byte_for_byte(default_run, tmp_path):
    run = tmp_path / default_run.name
    shutil.copytree(default_run, run)
    rerun(run, "02a_target", adaptation="none")
    rerun(run, "02b_adapt", adaptation="none")
    assert not (run / "results/02a_target/target_train_images.npz").exists()  # nothing to fit on
    doc = json.loads((run / "results/02b_adapt/adaptation.json").read_text())
    assert doc["passed_through"] and doc["status"] == "PASS" and doc["trainable_parameters"]["count"] == 0
    for name in ("model.json", "model.pt", "model.onnx", "logits.npz"):
        assert sha256_file(run / "results/02b_adapt" / name) == sha256_file(run / "results/02_train" / name), name
