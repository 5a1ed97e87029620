"""The phase contract, tested directly: ``Phase.input`` hands out only declared outputs of declared upstream
phases (verified against their manifests), ``Phase.out`` and ``finish`` refuse undeclared outputs, and every
phase's precheck runs before any kernel (a bad phase-04 or phase-07 parameter fails at resolve time)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.run import manifest, run_record
from helpers.run.graph import PHASES, get_phase
from helpers.run.phase import Phase
from helpers.run.runner import resolve_config


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    run_record.create(run, "contract", "0" * 64, [p.id for p in PHASES])
    return run


def finished_phase(run_dir, phase_id: str, files: dict[str, bytes]) -> None:
    """Write ``files`` as phase ``phase_id``'s results and its manifest (as a real phase would, manifest last)."""
    results = manifest.results_dir(run_dir, phase_id)
    for name, content in files.items():
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_bytes(content)
    manifest.write_manifest(run_dir, phase_id, {"phase": phase_id}, {"n": len(files)})


def phase(run_dir, phase_id: str) -> Phase:
    return Phase(get_phase(phase_id), run_dir, {"seed": 0})


def test_input_refuses_an_undeclared_upstream_phase(run_dir):
    finished_phase(run_dir, "01_data", {"splits.npz": b"x"})
    with pytest.raises(PermissionError, match="does not declare 04_quantize upstream"):
        phase(run_dir, "02_train").input("04_quantize", "quant_report.json")


def test_input_refuses_an_undeclared_file_of_a_declared_upstream(run_dir):
    finished_phase(run_dir, "01_data", {"splits.npz": b"x", "extra.json": b"{}"})
    with pytest.raises(PermissionError, match="'extra.json' is not a declared output of 01_data"):
        phase(run_dir, "02_train").input("01_data", "extra.json")


def test_input_refuses_a_file_altered_after_its_manifest(run_dir):
    finished_phase(run_dir, "01_data", {"distribution.json": b'{"class_names": ["a"]}'})
    reader = phase(run_dir, "02_train")
    assert reader.read_json("01_data", "distribution.json") == {"class_names": ["a"]}
    (manifest.results_dir(run_dir, "01_data") / "distribution.json").write_text('{"class_names": ["b"]}')
    with pytest.raises(RuntimeError, match="was altered after 01_data wrote it"):
        reader.input("01_data", "distribution.json")


def test_input_without_an_upstream_manifest_says_run_it_first(run_dir):
    with pytest.raises(FileNotFoundError, match="upstream phase 01_data has no manifest"):
        phase(run_dir, "09_report").input("01_data", "splits.npz")  # the report runs on whatever exists


def test_load_npz_returns_arrays_and_closes_the_file(run_dir, tmp_path):
    buffer = tmp_path / "splits.npz"
    np.savez(buffer, train=np.arange(3))
    finished_phase(run_dir, "01_data", {"splits.npz": buffer.read_bytes()})
    arrays = phase(run_dir, "02_train").load_npz("01_data", "splits.npz")
    assert list(arrays) == ["train"] and arrays["train"].tolist() == [0, 1, 2]
    (manifest.results_dir(run_dir, "01_data") / "splits.npz").unlink()  # no open handle keeps it alive


def test_out_refuses_an_undeclared_output(run_dir):
    finished_phase(run_dir, "01_data", {"splits.npz": b"x"})
    finished_phase(run_dir, "02a_target", {"target.json": b"{}"})
    finished_phase(run_dir, "02b_adapt", {"shift_logits.npz": b"x"})
    finished_phase(run_dir, "06_confidence", {"calibrated_logits.npz": b"x"})
    writer = phase(run_dir, "07_selective")
    assert writer.out("threshold.json").name == "threshold.json"
    with pytest.raises(PermissionError, match="'notes.json' is not a declared output of 07_selective"):
        writer.out("notes.json")


def test_finish_refuses_an_undeclared_file_and_a_missing_output(run_dir):
    writer = phase(run_dir, "00_environment")
    writer.results.mkdir(parents=True, exist_ok=True)
    (writer.results / "environment.json").write_text(json.dumps({}))
    with pytest.raises(RuntimeError, match="did not write its declared output"):
        writer.finish()
    (writer.results / "isa.png").write_bytes(b"png")
    (writer.results / "stray.txt").write_text("x")
    with pytest.raises(RuntimeError, match="wrote undeclared file"):
        writer.finish()
    assert manifest.read_manifest(run_dir, "00_environment") is None
    (writer.results / "stray.txt").unlink()
    writer.finish()
    assert manifest.read_manifest(run_dir, "00_environment")["files"].keys() == {"environment.json", "isa.png"}


def test_no_phase_declares_a_catch_all_output():
    """Declared outputs are exact names; a glob only where a name is a parameter (a role, a method, a model)."""
    for spec in PHASES:
        for pattern in spec.outputs + spec.optional:
            assert not pattern.startswith("*."), f"{spec.id} declares the catch-all {pattern!r}"


@pytest.mark.parametrize(
    "override, message",
    [
        ("04_quantize.calibration_methods=[minmax, kl]", "calibration method"),
        ("04_quantize.num_bins=1", "num_bins must be >= 2"),
        ("04_quantize.size_sweep=[0]", "size_sweep"),
        ("07_selective.criterion=foo", "unknown criterion"),
        ("06_confidence.methods=platt", "unknown calibration method"),
        ("06_confidence.n_bins=0", "n_bins must be >= 1"),
        ("05_latency.decision_batch=0", "decision_batch must be >= 1"),
        ("07_selective.selective_model=entropy", "selective_model 'entropy' is not a model of this run"),
    ],
)
def test_every_phase_precheck_runs_before_any_kernel(override, message):
    overrides = [override, "04_quantize.calibration_methods=[minmax]"] if "selective_model" in override else [override]
    with pytest.raises(ValueError, match=message):
        resolve_config(overrides=overrides)


def test_a_valid_cross_phase_choice_passes_the_precheck():
    resolved = resolve_config(overrides=["07_selective.selective_model=entropy"])
    assert resolved["07_selective"]["selective_model"] == "entropy"


def test_each_phase_is_given_its_typed_config_once_validated():
    """``spec.check`` (what ``calib run`` and ``Phase.open`` both call) returns the phase's frozen typed config: its
    fields are the resolved params, lists as tuples, and 06's methods string is parsed into names there."""
    import dataclasses

    resolved = resolve_config(overrides=["06_confidence.methods=dirichlet"])
    configs = {p.id: p.check(resolved[p.id], resolved) for p in PHASES}
    assert configs["00_environment"] is None and configs["09_report"] is None  # no precheck: no config
    for phase_id in [p.id for p in PHASES if p.id not in ("00_environment", "09_report")]:  # every phase with params
        config = configs[phase_id]
        assert dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen, phase_id
    assert configs["01_data"].per_class == 20  # samples_per_class 0: the digits default
    assert configs["02_train"].recipe()["epochs"] == resolved["02_train"]["epochs"]
    assert configs["03_activation_stats"].roles == ("base", "adapted")
    assert configs["02a_target"].with_train and configs["02b_adapt"].reads == ("model", "images", "labels")
    assert configs["02b_adapt"].target_modules == () and configs["02b_adapt"].rank == resolved["02b_adapt"]["lora_rank"]
    assert configs["06_confidence"].methods == ("identity", "temperature_scaling", "dirichlet")
    assert configs["07_selective"].goal is None  # max_mcc reaches for no target
    assert configs["05_latency"].batch_sizes == tuple(resolved["05_latency"]["batch_sizes"])
    assert configs["05_latency"].decision_batch == resolved["05_latency"]["decision_batch"]
    assert configs["08_bundle"].accept_rule == resolved["08_bundle"]["accept_rule"]


def test_typed_config_maps_parameters_by_field_name_or_declared_param():
    import dataclasses

    from helpers.run.params import param, typed_config

    @dataclasses.dataclass(frozen=True)
    class Config:
        mode: str = dataclasses.field(metadata=param("adaptation"))
        layers: tuple[str, ...] = ()
        unset: int = 7

    config = typed_config(Config, {"adaptation": "tent", "layers": ["a", "b"], "seed": 0})
    assert config == Config("tent", ("a", "b"), 7)


def test_present_inputs_are_the_verified_files_of_the_upstream_phases_that_ran(run_dir):
    finished_phase(run_dir, "01_data", {"splits.npz": b"x", "samples.png": b"y"})
    report = phase(run_dir, "09_report")
    inputs = report.present_inputs()
    assert list(inputs) == ["01_data"]
    assert {name: path.read_bytes() for name, path in inputs["01_data"].items()} == {
        "samples.png": b"y",
        "splits.npz": b"x",
    }
