"""The run infrastructure end to end, through the real CLI and real papermill kernels."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_runner import calib, only_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    calib("run", "--phases", "00,01", "--no-progress", "--runs-root", str(root))
    return only_run(root)


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / run_dir.name
    shutil.copytree(run_dir, dest)
    return dest


def test_run_directory_layout_and_record(digits_run):
    for rel in [
        "run_record.json",
        "config_resolved.yaml",
        "notebooks/00_environment.ipynb",
        "notebooks/01_data.ipynb",
        "results/01_data/splits.npz",
        "results/01_data/calibration_slice.npz",
        "results/01_data/samples.png",
        "results/00_environment/environment.json",
        "logs/01_data.jsonl",
        "manifests/01_data.json",
    ]:
        assert (digits_run / rel).is_file(), rel
    record = json.loads((digits_run / "run_record.json").read_text())
    assert record["status"] == "complete" and record["run_id"] == digits_run.name
    assert record["created"].endswith("+00:00") and record["versions"]["torch"].startswith("2.13")
    assert {row["status"] for row in record["phases"].values()} == {"complete"}
    assert len(record["phases"]["01_data"]["summary"]["slice_hash"]) == 64
    assert record["artifacts"]["results/01_data/splits.npz"]["size"] > 0
    assert "git" in record and "sha" in record["git"]
    manifest = json.loads((digits_run / "manifests/01_data.json").read_text())
    assert set(manifest["files"]) == {"splits.npz", "calibration_slice.npz", "distribution.json", "samples.png"}
    events = [json.loads(line)["event"] for line in (digits_run / "logs/01_data.jsonl").read_text().splitlines()]
    assert events[0] == "phase_started" and events[-1] == "phase_finished"


def test_verify_ls_show(digits_run):
    assert "all manifests verify" in calib("verify", str(digits_run)).stdout
    assert digits_run.name in calib("ls", "--runs-root", str(digits_run.parent)).stdout
    shown = calib("show", str(digits_run)).stdout
    assert "01_data" in shown and "slice_hash" in shown


def test_same_config_gives_byte_identical_results(digits_run, tmp_path):
    calib("run", "--phases", "00,01", "--no-progress", "--runs-root", str(tmp_path))
    again = only_run(tmp_path)
    first = sorted(p.relative_to(digits_run) for p in (digits_run / "results").rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in (again / "results").rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        assert (digits_run / rel).read_bytes() == (again / rel).read_bytes(), rel
    for phase in ("00_environment", "01_data"):
        assert (digits_run / "manifests" / f"{phase}.json").read_bytes() == (
            again / "manifests" / f"{phase}.json"
        ).read_bytes()


def test_altered_artifact_is_named_by_verify_and_rerun_by_resume(digits_run, tmp_path):
    run = copy_run(digits_run, tmp_path)
    target = run / "results/01_data/splits.npz"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    proc = calib("verify", str(run), check=False)
    assert proc.returncode == 1 and "altered results/01_data/splits.npz" in proc.stdout
    out = calib("run", "--resume", str(run), "--no-progress").stdout
    assert "[00_environment] up to date" in out and "[01_data] Data and calibration slice" in out
    assert calib("verify", str(run)).returncode == 0
    assert target.read_bytes() == (digits_run / "results/01_data/splits.npz").read_bytes()


def test_kill_9_during_phase_01_then_resume_completes(tmp_path):
    root = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers.cli", "run", "--phases", "00,01", "--no-progress", "--runs-root", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(root.glob("*/logs/01_data.jsonl")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run = only_run(root)
    assert not (run / "manifests/01_data.json").exists(), "killed phase must leave no manifest"
    assert (run / "manifests/00_environment.json").exists()
    out = calib("run", "--resume", str(run), "--no-progress").stdout
    assert "[00_environment] up to date" in out and "[01_data] Data and calibration slice" in out
    assert calib("verify", str(run)).returncode == 0
    assert not list(run.rglob(".tmp-*")), "no half-written files may remain after resume"


def test_bad_params_fail_before_any_run_directory_exists(tmp_path):
    root = tmp_path / "runs"
    cases = [
        (["-p", "epoch=3"], "unknown parameter(s) epoch in -p (did you mean epochs?); valid shared keys:"),
        (["-p", "02_train.lrr", "0.1"], "unknown parameter(s) lrr for phase 02_train in -p (did you mean lr?)"),
        (["-y", "[1, 2]"], "-y expects a YAML mapping"),
        (["-p", "epochs", "3", "4"], "-p expects KEY VALUE or KEY=VALUE"),
        (["-p", "seed=abc"], "'seed' must be int"),
        (["-p", "dataset=cifar10", "-p", f"data_dir={tmp_path / 'nope'}"], "does not exist"),
        (["-p", "dataset=mnist"], "unknown dataset 'mnist'; choose one of digits, cifar10"),
        (["--params", str(tmp_path / "missing.yaml")], "params file"),
        (["--phases", "42"], "unknown phase '42'"),
    ]
    for args, message in cases:
        proc = calib("run", "--no-progress", "--runs-root", str(root), *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert not root.exists() or not any(root.iterdir())


def test_unwritable_run_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = calib("run", "--no-progress", "--runs-root", str(blocker / "runs"), check=False)
    assert proc.returncode == 2 and f"cannot be created: {blocker} is a file" in proc.stderr


def project_copy_whose_phase_01_fails(tmp_path: Path) -> Path:
    """The project's notebooks and params, with one cell raising before phase 01's phase.finish()
    (every bad parameter is caught before a kernel starts, so a kernel failure is made this way)."""
    import nbformat

    from helpers.run.project import project_root

    copy = tmp_path / "project"
    for name in ("notebooks", "params"):
        shutil.copytree(project_root() / name, copy / name)
    shutil.copy(project_root() / "pyproject.toml", copy)
    path = copy / "notebooks" / "01_data.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell('raise RuntimeError("injected failure in 01")'))
    nbformat.write(nb, path)
    return copy


def test_failing_phase_leaves_no_manifest_and_records_the_error(tmp_path):
    project = project_copy_whose_phase_01_fails(tmp_path)
    proc = calib(
        "run",
        "--phases",
        "01",
        "--no-progress",
        "--runs-root",
        str(tmp_path / "runs"),
        env={"CALIB_PROJECT_ROOT": str(project)},
        check=False,
    )
    assert proc.returncode == 1 and "injected failure in 01" in proc.stderr
    run = only_run(tmp_path / "runs")
    record = json.loads((run / "run_record.json").read_text())
    assert record["status"] == "failed" and record["phases"]["01_data"]["status"] == "failed"
    assert "RuntimeError: injected failure in 01" in record["phases"]["01_data"]["error"]
    assert not (run / "manifests/01_data.pending.json").exists(), "a failed phase leaves no pending manifest either"
    assert calib("verify", str(run), check=False).returncode == 3, "failed: incomplete, not damaged"
    assert not (run / "manifests/01_data.json").exists()
    assert (run / "notebooks/01_data.ipynb").exists(), "the executed notebook shows the error"


def test_cifar10_phases_00_01(cifar10_dir, tmp_path):
    calib(
        "run",
        "--phases",
        "01",
        "--no-progress",
        "--runs-root",
        str(tmp_path),
        "-p",
        "dataset=cifar10",
        "-p",
        f"data_dir={cifar10_dir}",
    )
    run = only_run(tmp_path)
    dist = json.loads((run / "results/01_data/distribution.json").read_text())
    assert dist["distribution"] == {name: 100 for name in dist["class_names"]} and dist["inputs"]["shape"] == [
        1000,
        32,
        32,
        3,
    ]
