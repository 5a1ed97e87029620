"""What `calib run` checks before it creates a run (upper bounds, the run name), and a run created all at once."""

from __future__ import annotations

import datetime as dt

import pytest

from helpers.run.graph import PHASES, select
from helpers.run.params import LIFT_BOUNDS_ENV, ParamError
from helpers.run.runner import all_defaults, create_run, resolve_config


@pytest.fixture
def no_lifted_bounds(monkeypatch):
    monkeypatch.delenv(LIFT_BOUNDS_ENV, raising=False)
    return monkeypatch


def test_every_bound_names_a_numeric_parameter_of_its_phase_and_its_default_is_within():
    defaults = all_defaults()
    assert any(spec.bounds for spec in PHASES)
    for spec in PHASES:
        for name, bound in spec.bounds:
            default = defaults[spec.id][name]
            values = default if isinstance(default, list) else [default]
            assert isinstance(bound, int) and all(isinstance(v, int) and v <= bound for v in values), (spec.id, name)


def test_epochs_beyond_its_bound_is_refused_with_the_bound_and_how_to_lift_it(no_lifted_bounds):
    """Issue 29.4: epochs=1000000000 was accepted and trained until someone killed it."""
    with pytest.raises(ParamError) as info:
        resolve_config(overrides=["epochs=1000000000"])
    message = str(info.value)
    assert "02_train.epochs=1000000000 is above its upper bound 1000 (set by -p (epochs))" in message
    assert f"{LIFT_BOUNDS_ENV}=02_train.epochs" in message
    with pytest.raises(ParamError, match=r"05_latency.batch_sizes holds 100000, above its upper bound 4096"):
        resolve_config(overrides=["05_latency.batch_sizes=[1, 100000]"])


@pytest.mark.parametrize("lift", ["02_train.epochs", "epochs", "num_bins, 02_train.epochs"])
def test_a_bound_is_lifted_by_naming_its_key_in_the_environment(no_lifted_bounds, lift):
    no_lifted_bounds.setenv(LIFT_BOUNDS_ENV, lift)
    assert resolve_config(overrides=["epochs=5000"])["02_train"]["epochs"] == 5000
    with pytest.raises(ParamError, match="06_confidence.n_boot=10000000 is above its upper bound"):
        resolve_config(overrides=["06_confidence.n_boot=10000000"])  # only the named keys are lifted


def test_a_run_that_cannot_be_created_leaves_nothing(tmp_path):
    """Issue 29.3: a failure while creating the run left config files and notebooks/ without a run record."""
    resolved = resolve_config()
    resolved["00_environment"] = {**resolved["00_environment"], "when": dt.date(2024, 1, 1)}  # no JSON for it
    root = tmp_path / "runs"
    with pytest.raises(TypeError, match="date is not JSON serializable"):
        create_run(resolved, select("00"), root)
    assert list(root.iterdir()) == []
    with pytest.raises(TypeError):
        create_run(resolved, select("00"), root, run_id="named")
    assert list(root.iterdir()) == []


def test_create_run_refuses_a_name_that_is_not_one_folder_under_the_root(tmp_path):
    root = tmp_path / "a" / "runs"
    for bad in ("../../escape", str(tmp_path / "abs")):
        with pytest.raises(ParamError, match="is not a valid name"):
            create_run(resolve_config(), select("00"), root, run_id=bad)
    assert list(tmp_path.iterdir()) == []


def test_a_created_run_is_complete_and_a_taken_name_is_refused(tmp_path):
    resolved = resolve_config()
    run_dir = create_run(resolved, select("00"), tmp_path, run_id="one")
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config_resolved.yaml",
        "config_sources.yaml",
        "notebooks",
        "run_record.json",
    ]
    with pytest.raises(ParamError, match="run one already exists"):
        create_run(resolved, select("00"), tmp_path, run_id="one")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one"]
