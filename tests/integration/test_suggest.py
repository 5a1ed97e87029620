"""Issue 30.1 through the real CLI: a near miss is answered with what was meant -- a key of any phase (with its
phase id), a params file beside the one named, a phase given by its bare number -- and nothing is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import calib
from helpers.run.graph import select
from helpers.run.project import project_root

pytestmark = pytest.mark.integration


def refused(root: Path, *args: str) -> str:
    """``calib run ARGS`` refused before anything starts: its error line; the runs root stays empty."""
    proc = calib("run", "--runs-root", str(root), *args, check=False, cwd=project_root())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not root.exists() or not any(root.iterdir())
    return proc.stderr


def test_a_key_of_another_phase_is_suggested_with_its_phase_id(tmp_path):
    message = refused(tmp_path / "runs", "-p", "02_train.adapt_epochs=5")
    assert (
        "unknown parameter(s) adapt_epochs for phase 02_train in -p (did you mean 02b_adapt.adapt_epochs?)" in message
    )


def test_a_missing_params_file_names_the_near_one(tmp_path):
    message = refused(tmp_path / "runs", "-f", "params/cifar.yaml")
    assert "params file params/cifar.yaml does not exist (did you mean params/cifar10.yaml?)" in message


def test_a_phase_number_without_its_leading_zero_is_that_phase_and_a_near_name_is_suggested(tmp_path):
    """``--help`` says phase ids or numbers; ``--phases 4`` was refused (the id's number is ``04``)."""
    assert select("4") == select("04") and select("2b,1") == select("02b,01")
    message = refused(tmp_path / "runs", "--phases", "quantise")
    assert "unknown phase 'quantise' (did you mean 04_quantize?)" in message


def test_a_near_value_of_a_choice_parameter_is_suggested(tmp_path):
    message = refused(tmp_path / "runs", "-p", "methods=temprature_scaling")
    assert "unknown calibration method(s) ['temprature_scaling'] (did you mean temperature_scaling?)" in message
