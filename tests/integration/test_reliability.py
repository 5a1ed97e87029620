"""Resume identity, self-verifying manifests, executed notebooks, a damaged record, verify's exit codes.

Every case of the reliability review (../shared/reviews/reliability_review.md) that needs a run,
on copies of one real `calib run --phases 00,01` (real kernels, real files).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cli_runner import calib, only_run
from helpers.run import run_record

COMPLETE, DAMAGED, INCOMPLETE = 0, 1, 3


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    calib("run", "--phases", "00,01", "--no-progress", "--runs-root", str(root))
    return only_run(root)


@pytest.fixture
def run(small_run, tmp_path) -> Path:
    dest = tmp_path / "runs" / small_run.name
    shutil.copytree(small_run, dest)
    return dest


def flip(path: Path, at: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x01
    path.write_bytes(bytes(blob))


def edit_config(run: Path, phase: str, key: str, value) -> None:
    path = run / "config_resolved.yaml"
    config = yaml.safe_load(path.read_text())
    if value is None:
        config[phase].pop(key)
    else:
        config[phase][key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=True))


def verify(run: Path):
    return calib("verify", str(run), check=False)


def test_config_is_the_run_identity_and_edits_are_refused_before_anything_is_withdrawn(run):
    manifest_bytes = (run / "manifests/01_data.json").read_bytes()
    for key, value, shown in [
        ("val_fraction", 0.2, "01_data.val_fraction: 0.3 -> 0.2"),
        ("seed", 1, "01_data.seed: 0 -> 1"),
        ("val_fraction", "abc", "01_data.val_fraction: 0.3 -> 'abc'"),
        ("bogus_key", 7, "01_data.bogus_key added (7)"),
    ]:
        original = (run / "config_resolved.yaml").read_bytes()
        edit_config(run, "01_data", key, value)
        proc = calib("run", "--resume", str(run), "--no-progress", check=False)
        assert proc.returncode == 2, proc.stderr
        assert shown in proc.stderr and "start a new run" in proc.stderr and "calib run" in proc.stderr, proc.stderr
        assert (run / "manifests/01_data.json").read_bytes() == manifest_bytes, "nothing withdrawn"
        assert (run / "results/01_data/splits.npz").is_file()
        v = verify(run)
        assert v.returncode == DAMAGED and "config_resolved.yaml is not the config the run was created with" in v.stdout
        (run / "config_resolved.yaml").write_bytes(original)
    assert verify(run).returncode == COMPLETE


def test_tampered_manifest_summary_or_input_key_is_damage_and_resume_reruns_that_phase(run):
    path = run / "manifests/01_data.json"
    original = path.read_bytes()
    for field_name in ("slice_hash", "input_key"):
        text = original.decode()
        at = text.index(field_name) + len(field_name) + 5
        flip(path, at)
        v = verify(run)
        assert v.returncode == DAMAGED and "manifests/01_data.json was altered" in v.stdout, v.stdout
        path.write_bytes(original)
    flip(path, original.decode().index("slice_hash") + 15)
    out = calib("run", "--resume", str(run), "--no-progress").stdout
    assert "[00_environment] up to date" in out and "[01_data] re-runs: its manifest does not verify" in out
    assert path.read_bytes() == original and verify(run).returncode == COMPLETE


def test_executed_notebook_altered_or_deleted_is_damage_and_resume_restores_it(run):
    notebook = run / "notebooks/01_data.ipynb"
    flip(notebook, 200)
    v = verify(run)
    assert v.returncode == DAMAGED and "executed notebook notebooks/01_data.ipynb was altered" in v.stdout
    out = calib("run", "--resume", str(run), "--no-progress").stdout
    assert "[01_data] re-runs: 01_data: executed notebook notebooks/01_data.ipynb was altered" in out
    assert verify(run).returncode == COMPLETE
    (run / "notebooks/00_environment.ipynb").unlink()
    v = verify(run)
    assert v.returncode == DAMAGED and "executed notebook notebooks/00_environment.ipynb is missing" in v.stdout
    calib("run", "--resume", str(run), "--no-progress")
    assert (run / "notebooks/00_environment.ipynb").is_file() and verify(run).returncode == COMPLETE


def test_damaged_run_record_is_named_ls_lists_the_others_and_resume_rebuilds_it(run, small_run):
    other = run.parent / "other-run"
    shutil.copytree(small_run, other)
    record = run / "run_record.json"
    flip(record, 0)
    for command in ("verify", "show"):
        proc = calib(command, str(run), check=False)
        assert str(record) in proc.stdout + proc.stderr and "--resume" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    assert verify(run).returncode == DAMAGED
    listing = calib("ls", "--runs-root", str(run.parent)).stdout
    assert "other-run" in listing and "damaged" in listing
    out = calib("run", "--resume", str(run), "--no-progress").stdout
    assert "rebuilt" in out and "[01_data] up to date" in out
    rebuilt = json.loads(record.read_text())
    assert (
        rebuilt["status"] == "complete"
        and rebuilt["config_hash"] == json.loads((small_run / "run_record.json").read_text())["config_hash"]
    )
    assert verify(run).returncode == COMPLETE


def test_verify_says_incomplete_for_a_run_with_pending_phases_and_damaged_for_a_lying_record(run):
    record = json.loads((run / "run_record.json").read_text())
    (run / "manifests/01_data.json").unlink()
    shutil.rmtree(run / "results/01_data")
    record["phases"]["01_data"]["status"] = "running"
    record["status"] = "running"
    run_record.save(run, record)  # as the runner leaves it when killed inside the phase
    v = verify(run)
    assert v.returncode == INCOMPLETE and "01_data: running, no manifest" in v.stdout and "incomplete" in v.stdout
    record["phases"]["01_data"]["status"] = "complete"
    run_record.save(run, record)
    v = verify(run)
    assert v.returncode == DAMAGED and "01_data: run_record.json says complete but it has no manifest" in v.stdout


def test_environment_json_holds_no_measurement_of_the_moment(small_run):
    env = json.loads((small_run / "results/00_environment/environment.json").read_text())
    assert "disk_free_gib" not in env and "disk" not in json.dumps(env)
    record = json.loads((small_run / "run_record.json").read_text())
    assert record["host"]["disk_free_gib"] > 0


def test_each_phase_execution_records_its_git_state_and_why_it_ran(small_run, run):
    rows = json.loads((small_run / "run_record.json").read_text())["phases"]
    assert all("sha" in row["git"] and "dirty" in row["git"] for row in rows.values())
    assert {row["reason"] for row in rows.values()} == {"new run"}
    assert (small_run / "config_sources.yaml").is_file()


def test_two_resumes_of_one_run_at_once_one_runs_the_other_is_told_the_pid(run):
    import subprocess
    import sys

    (run / "manifests/01_data.json").unlink()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "helpers.cli", "run", "--resume", str(run), "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = sorted((p.returncode, err) for p in procs for _, err in [p.communicate(timeout=600)])
    (ok, _), (refused, message) = results
    assert ok == 0 and refused == 2, results
    assert "is being executed by PID" in message and "Traceback" not in message
    assert verify(run).returncode == COMPLETE


def test_resume_under_changed_code_says_why_each_phase_reruns_and_records_its_git_state(run, tmp_path):
    """The review's finding 10, with a notebook edit (a project copy: the installed helpers stay as they are)."""
    import nbformat

    from helpers.run.project import project_root

    project = tmp_path / "project"
    for name in ("notebooks", "params"):
        shutil.copytree(project_root() / name, project / name)
    shutil.copy(project_root() / "pyproject.toml", project)
    path = project / "notebooks" / "01_data.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    cell.source += "\n# an edit"
    nbformat.write(nb, path)
    out = calib("run", "--resume", str(run), "--no-progress", env={"CALIB_PROJECT_ROOT": str(project)}).stdout
    assert "[00_environment] up to date" in out
    assert "[01_data] re-runs: its notebook's code changed since it ran" in out, out
    row = json.loads((run / "run_record.json").read_text())["phases"]["01_data"]
    assert row["reason"] == "its notebook's code changed since it ran"
    assert row["git"] == {"sha": None, "dirty": None}, "the git state of this execution (the copy is no checkout)"


def test_an_edited_record_is_damage_and_resume_does_not_keep_it(run):
    """Issue 29, item 1: a phase row's input key edited in run_record.json passed verify, and --resume skipped
    every phase and kept the edited record. Now the record's own sha256 says it was altered, and --resume
    rebuilds it from the manifests. A legacy record (no self-hash) is field-checked: an edited registry
    entry is damage, and --resume registers the file as it is."""
    path = run / "run_record.json"
    text = path.read_text()
    flip(path, text.index('"input_key": "', text.index('"01_data": {', text.index('"phases"'))) + 20)
    v = verify(run)
    assert v.returncode == DAMAGED and "its content hash does not match" in v.stdout, v.stdout
    out = calib("run", "--resume", str(run), "--no-progress").stdout
    assert "rebuilt run_record.json" in out and "[01_data] up to date" in out, out
    rows = json.loads(path.read_text())["phases"]
    assert rows["01_data"]["input_key"] == json.loads((run / "manifests/01_data.json").read_text())["input_key"]
    assert verify(run).returncode == COMPLETE

    record = json.loads(path.read_text())
    del record["schema"], record["sha256"]  # as a record written before the self-hash
    record["artifacts"]["results/01_data/splits.npz"]["sha256"] = "0" * 64
    path.write_text(json.dumps(record, indent=2))
    v = verify(run)
    assert (
        v.returncode == DAMAGED
        and "results/01_data/splits.npz: differs from run_record.json's artifact registry" in v.stdout
    )
    assert "legacy record" in v.stdout + v.stderr
    calib("run", "--resume", str(run), "--no-progress")
    assert verify(run).returncode == COMPLETE
