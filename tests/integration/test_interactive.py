"""A notebook opened by hand (run_dir left empty) finds or creates its upstream phases in a scratch run."""

from __future__ import annotations

import json
import os

import papermill as pm

from helpers.run import manifest
from helpers.run.project import project_root


def execute_as_a_user(notebook: str, runs_root, out):
    """papermill with no parameters injected: exactly the notebook's own defaults, cwd notebooks/."""
    os.environ["CALIB_RUNS_ROOT"] = str(runs_root)
    try:
        pm.execute_notebook(
            str(project_root() / "notebooks" / notebook),
            str(out),
            kernel_name="python3",
            cwd=str(project_root() / "notebooks"),
            progress_bar=False,
        )
    finally:
        os.environ.pop("CALIB_RUNS_ROOT")


def test_notebook_with_defaults_builds_and_then_reuses_its_scratch_upstream(tmp_path):
    execute_as_a_user("02_train.ipynb", tmp_path / "runs", tmp_path / "first.ipynb")
    (scratch,) = (tmp_path / "runs").iterdir()
    assert scratch.name.startswith("scratch-")
    record = json.loads((scratch / "run_record.json").read_text())
    assert {pid: row["status"] for pid, row in record["phases"].items()} == {
        "01_data": "complete",
        "02_train": "complete",
    }
    assert manifest.verify(scratch, "01_data") == [] and manifest.verify(scratch, "02_train") == []
    data_manifest = (scratch / "manifests/01_data.json").read_bytes()

    execute_as_a_user("02_train.ipynb", tmp_path / "runs", tmp_path / "second.ipynb")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [scratch.name]
    started = [json.loads(line) for line in (scratch / "logs/01_data.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "phase_started" for e in started) == 1, "the verified upstream phase is reused"
    assert (scratch / "manifests/01_data.json").read_bytes() == data_manifest

    # then 03 by hand: its scratch run is found by its upstream phases (01, 02), not by its own params
    train_manifest = (scratch / "manifests/02_train.json").read_bytes()
    execute_as_a_user("03_activation_stats.ipynb", tmp_path / "runs", tmp_path / "03.ipynb")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [scratch.name], "one scratch run for 02 and 03"
    assert (scratch / "manifests/02_train.json").read_bytes() == train_manifest, "02 was reused, not re-run"
    record = json.loads((scratch / "run_record.json").read_text())
    assert {pid: row["status"] for pid, row in record["phases"].items()} == dict.fromkeys(
        ["01_data", "02_train", "02a_target", "02b_adapt", "03_activation_stats"], "complete"
    )
    assert record["status"] == "complete", "a scratch run whose phases all completed is not left running"
    assert "03_activation_stats" in (scratch / "config_resolved.yaml").read_text()
