"""Repairing and extending a run: a notebook run in a run that lacks its phase or an upstream phase fails with one
line naming `calib run --resume RUN --phases NN`, and that command adds the phases with the run's own config
(refused, before any kernel, where that config cannot produce them); a notebook run by hand reuses the phases a
verified run of the runs root holds with the same input keys, and its first output line says from which run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest
import yaml

from cli_runner import calib, only_run
from helpers.run import manifest, run_record
from helpers.run.graph import select
from helpers.run.lock import LOCK_FILES
from helpers.run.project import project_root
from helpers.run.runner import create_run, resolve_config


def notebook(phase_id: str) -> str:
    return str(project_root() / "notebooks" / f"{phase_id}.ipynb")


def error_outputs(executed: Path) -> list[dict]:
    cells = json.loads(executed.read_text())["cells"]
    return [out for cell in cells for out in cell.get("outputs", []) if out["output_type"] == "error"]


def first_output_line(executed: Path) -> str:
    cells = json.loads(executed.read_text())["cells"]
    texts = [out["text"] for cell in cells for out in cell.get("outputs", []) if out["output_type"] == "stream"]
    return "".join(texts[0]).splitlines()[0]


@pytest.fixture(scope="module")
def data_run(tmp_path_factory) -> Path:
    """`calib run --phases 01 -p seed=1`: a real run without 02a_target; seed set through a shared key."""
    root = tmp_path_factory.mktemp("extend") / "runs"
    calib("run", "--phases", "01", "-p", "seed=1", "--no-progress", "--runs-root", str(root))
    return only_run(root)


def test_a_notebook_outside_its_run_names_the_command_that_extends_the_run_and_that_command_does(data_run, tmp_path):
    command = f"calib run --resume {data_run} --phases 02a"
    data_manifest = manifest.manifest_path(data_run, "01_data").read_bytes()
    proc = subprocess.run(  # the papermill command as a user types it
        [sys.executable, "-m", "papermill", notebook("02a_target"), str(tmp_path / "out.ipynb")]
        + ["-p", "run_dir", str(data_run), "--cwd", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"MissingUpstream: run {data_run} does not hold phase 02a_target; to add 02a_target and what it reads to "
        f"that run: {command}"
    )
    (error,) = error_outputs(tmp_path / "out.ipynb")
    assert error["traceback"] == [last], "the notebook's error is that one line, no stack"
    assert manifest.manifest_path(data_run, "01_data").read_bytes() == data_manifest

    extended = calib(*command.split()[1:], "--no-progress")
    assert "adding 02a_target to the run with its config (02a_target.seed=1)" in extended.stdout
    assert "[01_data] up to date" in extended.stdout
    config = yaml.safe_load((data_run / "config_resolved.yaml").read_text())
    assert list(config) == ["01_data", "02a_target"] and config["02a_target"]["seed"] == 1  # as -p seed=1 gave it
    record = run_record.load(data_run)
    assert record["status"] == "complete" and record["config"] == config
    assert {pid: row["status"] for pid, row in record["phases"].items()} == {
        "01_data": "complete",
        "02a_target": "complete",
    }
    (entry,) = record["extended"]
    assert entry["phases"] == ["02a_target"] and entry["by"] == "calib run --resume --phases 02a"
    assert manifest.manifest_path(data_run, "01_data").read_bytes() == data_manifest, "01 was not re-run"
    verified = calib("verify", str(data_run))
    assert "complete and intact" in verified.stdout

    (data_run / "run_record.json").write_text("{ lost")  # the run id names the config before the extension
    rebuilt = calib("run", "--resume", str(data_run), "--no-progress")
    assert "rebuilt run_record.json: 2 phase(s) complete" in rebuilt.stdout and "re-runs" not in rebuilt.stdout
    assert "complete and intact" in calib("verify", str(data_run)).stdout


def test_a_notebook_whose_upstream_phase_is_missing_fails_in_one_line_naming_the_command(data_run, tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as raised:
        pm.execute_notebook(
            notebook("07_selective"),
            str(tmp_path / "out.ipynb"),
            parameters={"run_dir": str(data_run)},
            cwd=str(tmp_path),
            kernel_name="python3",
            progress_bar=False,
        )
    assert raised.value.ename == "MissingUpstream"
    (line,) = raised.value.traceback  # 02a is there when the test above extended the run first
    assert re.fullmatch(
        rf"MissingUpstream: upstream phases (02a_target, )?02b_adapt, 06_confidence have no manifest in run "
        rf"{re.escape(str(data_run))}; to add 07_selective and what it reads to that run: "
        rf"calib run --resume {re.escape(str(data_run))} --phases 07",
        line,
    ), line


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run but its lock files (any executor takes the lock first)."""
    files = (p for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name not in LOCK_FILES)
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in files}


@pytest.mark.parametrize(
    ("phases", "creation", "lifted", "refusal"),
    [
        (  # n_boot: only 06 and 07 declare it, so a run of phase 04 did not keep the value -p gave them
            "04",
            ["n_boot=50"],
            "",
            "cannot take 06_confidence, 07_selective with the config it was created with: 06_confidence.n_boot "
            "(set by -p (n_boot)), 07_selective.n_boot (set by -p (n_boot)) differed from the notebook default",
        ),
        (  # the run's 06 keeps n_boot=200000 (its bound lifted at creation); 07 takes it and its bound refuses it
            "06",
            ["n_boot=200000"],
            "n_boot",
            "cannot take 07_selective with its config: 07_selective.n_boot=200000 is above its upper bound 100000",
        ),
    ],
)
def test_an_extension_the_runs_config_cannot_produce_is_refused_before_anything_runs(
    phases, creation, lifted, refusal, tmp_path, monkeypatch
):
    monkeypatch.setenv("CALIB_LIFT_BOUNDS", lifted)
    resolved = resolve_config(overrides=creation, sources=(sources := {}))
    run_dir = create_run(resolved, select(phases), tmp_path / "runs", "the-run", sources)  # no phase executed yet
    monkeypatch.delenv("CALIB_LIFT_BOUNDS")
    before = snapshot(run_dir)
    proc = calib("run", "--resume", str(run_dir), "--phases", "07", "--no-progress", check=False)
    assert proc.returncode == 2 and refusal in proc.stderr, proc.stderr
    assert snapshot(run_dir) == before, "nothing written, no kernel started"


def test_a_notebook_run_by_hand_reuses_a_verified_runs_phases_and_says_from_which(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    calib("run", "--phases", "01", "--no-progress", "--runs-root", str(root))
    source = only_run(root)
    monkeypatch.setenv("CALIB_RUNS_ROOT", str(root))
    pm.execute_notebook(  # "Run All" in JupyterLab: the notebook's own defaults, run_dir empty
        notebook("02a_target"),
        str(tmp_path / "02a.ipynb"),
        kernel_name="python3",
        cwd=str(project_root() / "notebooks"),
        progress_bar=False,
    )
    (scratch,) = root.glob("scratch-*")
    assert first_output_line(tmp_path / "02a.ipynb") == (
        f"02a_target: scratch run {scratch}; reused from run {source.name}: 01_data"
    )
    row = run_record.load(scratch)["phases"]["01_data"]
    assert row["status"] == "complete" and row["reused_from"]["run"] == source.name
    assert not (scratch / "logs" / "01_data.jsonl").exists(), "01_data was materialized, not executed"
    results = manifest.results_dir(scratch, "01_data") / "splits.npz"
    assert results.stat().st_ino == (manifest.results_dir(source, "01_data") / "splits.npz").stat().st_ino
    assert "complete and intact" in calib("verify", str(scratch)).stdout
