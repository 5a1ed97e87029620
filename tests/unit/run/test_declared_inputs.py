"""Per-mode declared inputs and seal(): a label-free adaptation phase cannot reach a label file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.adaptation.methods import AdaptationError
from helpers.run import atomic, manifest, run_record
from helpers.run.graph import MODEL_PHASE, get_phase
from helpers.run.params import notebook_parameters
from helpers.run.phase import Phase

UPSTREAM = {
    "01_data": ["splits.npz"],
    "02_train": ["model.json", "model.pt"],
    "02a_target": [
        "target_train_images.npz",
        "target_train_labels.npz",
        "target_test_images.npz",
        "target_test_labels.npz",
        "source_test_images.npz",
        "source_test_labels.npz",
    ],
}


@pytest.fixture
def run_dir(tmp_path):
    """A run directory whose upstream phases have real files and real manifests."""
    run_record.create(tmp_path, "test", "0" * 64, list(UPSTREAM) + ["02b_adapt"])
    for phase_id, names in UPSTREAM.items():
        for name in names:
            atomic.save_npz(manifest.results_dir(tmp_path, phase_id) / name, x=np.arange(3))
        manifest.write_manifest(tmp_path, phase_id, "key")
    return tmp_path


def adapt_phase(run_dir, mode: str, objective: str = "supervised") -> Phase:
    """Phase 02b as ``Phase.open`` makes it: its params, and the typed config its precheck returns."""
    spec = get_phase("02b_adapt")
    params = {**notebook_parameters(spec.notebook), "adaptation": mode, "lora_objective": objective}
    return Phase(spec, run_dir, params, spec.check(params))


@pytest.mark.parametrize(
    ("mode", "objective"), [("adabn", "supervised"), ("tent", "supervised"), ("lora", "shot"), ("lora", "entropy")]
)
def test_label_free_modes_are_handed_target_images_only(run_dir, mode, objective):
    phase = adapt_phase(run_dir, mode, objective)
    assert phase.input("02a_target", "target_train_images.npz").is_file()
    assert phase.input("02_train", "model.pt").is_file()
    for name in (
        "target_train_labels.npz",
        "target_test_labels.npz",
        "source_test_labels.npz",
        "target_test_images.npz",
    ):
        with pytest.raises(
            PermissionError,
            match=f"02b_adapt with {mode}( \\({objective}\\))? does not read 02a_target/{name}",
        ):
            phase.input("02a_target", name)
    with pytest.raises(PermissionError, match="does not read 01_data/splits.npz before phase.seal()"):
        phase.input("01_data", "splits.npz")


def test_seal_opens_evaluation_data_and_never_the_training_labels(run_dir):
    phase = adapt_phase(run_dir, "adabn")
    phase.results.mkdir(parents=True)
    atomic.write_json(phase.out("model.json"), {"name": "m"})
    with pytest.raises(PermissionError, match="before phase.seal"):
        phase.input("02a_target", "target_test_labels.npz")
    phase.seal("model.json")
    assert phase.input("02a_target", "target_test_labels.npz").is_file()
    assert phase.input("01_data", "splits.npz").is_file()
    with pytest.raises(PermissionError, match="does not read 02a_target/target_train_labels.npz"):
        phase.input("02a_target", "target_train_labels.npz")
    with pytest.raises(PermissionError, match="is sealed"):
        phase.out("model.json")


def test_a_sealed_file_changed_afterwards_fails_finish(run_dir):
    phase = adapt_phase(run_dir, "adabn")
    phase.results.mkdir(parents=True)
    path = atomic.write_json(phase.out("model.json"), {"name": "m"})
    phase.seal("model.json")
    path.write_text(json.dumps({"name": "changed after the labels were readable"}))
    with pytest.raises(RuntimeError, match="sealed output.*model.json changed after phase.seal"):
        phase.finish()
    assert manifest.read_manifest(run_dir, "02b_adapt") is None


def test_lora_reads_training_labels_and_none_reads_no_target_data(run_dir):
    assert adapt_phase(run_dir, "lora").input("02a_target", "target_train_labels.npz").is_file()
    with pytest.raises(
        PermissionError,
        match="02b_adapt with none does not read 02a_target/target_train_images.npz",
    ):
        adapt_phase(run_dir, "none").input("02a_target", "target_train_images.npz")


def test_an_undeclared_mode_is_refused_when_the_phase_opens(run_dir):
    with pytest.raises(AdaptationError, match="unknown adaptation mode 'magic'; choose one of none, lora, adabn, tent"):
        adapt_phase(run_dir, "magic")


def test_a_config_that_does_not_say_what_it_reads_is_refused(run_dir):
    """The graph declares 02b's inputs by kind; a config without ``reads`` (here: none) cannot open the phase."""
    with pytest.raises(ValueError, match="02b_adapt declares its inputs by kind .*model, images, labels.*reads"):
        Phase(get_phase("02b_adapt"), run_dir, {"adaptation": "tent"})


def test_each_mode_reads_the_input_kinds_its_config_derives():
    spec = get_phase("02b_adapt")
    defaults = notebook_parameters(spec.notebook)
    reads = {
        (mode, objective): spec.check({**defaults, "adaptation": mode, "lora_objective": objective}).reads
        for mode, objective in [("none", "supervised"), ("lora", "supervised"), ("lora", "shot"), ("adabn", "shot")]
    }
    assert reads == {
        ("none", "supervised"): ("model",),
        ("lora", "supervised"): ("model", "images", "labels"),
        ("lora", "shot"): ("model", "images"),
        ("adabn", "shot"): ("model", "images"),
    }


def test_every_consumer_of_the_model_reads_it_from_the_adaptation_phase():
    for phase_id in ("03_activation_stats", "04_quantize", "05_latency", "06_confidence", "08_bundle", "09_report"):
        assert MODEL_PHASE in get_phase(phase_id).upstream, phase_id
    for phase_id in ("04_quantize", "05_latency", "06_confidence", "08_bundle"):
        assert "02_train" not in get_phase(phase_id).upstream, f"{phase_id} would read the unadapted model"
    assert "02_train" in get_phase("03_activation_stats").upstream  # its `base` role, beside `adapted`


def test_phase_prefixes_select_the_adaptation_phase_and_its_upstream():
    from helpers.run.graph import select

    assert [p.id for p in select("02b")] == ["01_data", "02_train", "02a_target", "02b_adapt"]
    assert [p.id for p in select("02")] == ["01_data", "02_train"]
    assert [p.id for p in select("03")][-2:] == ["02b_adapt", "03_activation_stats"]
