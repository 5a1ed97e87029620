"""helpers.run.hand_run: upstream phases reused from verified runs of the runs root (real run directories), and
the save hook on a real git checkout with the project's clean filter."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from helpers.run import atomic, hand_run, manifest, nbclean, run_record
from helpers.run.graph import get_phase, select
from helpers.run.project import project_root
from helpers.run.runner import create_run, resolve_config


def git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git repository holding the project's notebooks, params and .gitattributes, the filter installed."""
    repo = tmp_path / "project"
    for name in ("notebooks", "params"):
        shutil.copytree(project_root() / name, repo / name)
    for name in ("pyproject.toml", ".gitattributes"):
        shutil.copy(project_root() / name, repo)
    git(repo, "init", "-q")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    nbclean.install(repo)
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "source notebooks")
    monkeypatch.setenv("CALIB_PROJECT_ROOT", str(repo))
    monkeypatch.setenv("CALIB_RUNS_ROOT", str(tmp_path / "runs"))
    return repo


def save_with_outputs(path, edit: str = "") -> None:
    """What JupyterLab's save of a run notebook looks like: outputs and execution counts in every code cell."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["a long output line\n"] * 50}]
            cell["execution_count"] = 1
    if edit:
        next(c for c in nb["cells"] if c["cell_type"] == "code")["source"].append(edit)
    path.write_text(json.dumps(nb, indent=1))


def test_a_save_with_outputs_alone_leaves_git_status_clean(checkout):
    path = checkout / "notebooks" / "06_confidence.ipynb"
    save_with_outputs(path)
    assert git(checkout, "diff") == "" and git(checkout, "status", "--porcelain") != ""  # git's size shortcut
    hand_run.keep_executed_copy({"type": "notebook"}, str(path))
    assert git(checkout, "status", "--porcelain") == ""
    assert json.loads(path.read_text())["cells"][2]["outputs"]  # the saved outputs stay in the working file


def test_a_real_edit_stays_unstaged_and_visible(checkout):
    path = checkout / "notebooks" / "06_confidence.ipynb"
    save_with_outputs(path, edit="\n# changed by the user")
    assert not hand_run.refresh_git_index(path)
    hand_run.keep_executed_copy({"type": "notebook"}, str(path))
    assert git(checkout, "status", "--porcelain").strip() == "M notebooks/06_confidence.ipynb"
    assert git(checkout, "diff", "--cached") == ""


def data_phase_done(run_dir, resolved: dict) -> None:
    """What phase 01 leaves in a run: its declared results, its executed notebook, then its manifest under the key
    its params, notebook and the helper sources give (the phase's files are small stand-ins)."""
    spec = get_phase("01_data")
    results = manifest.results_dir(run_dir, spec.id)
    for name in spec.outputs:
        atomic.write_bytes(results / name, f"{name} of {run_dir.name}".encode())
    atomic.write_text(run_dir / "notebooks" / f"{spec.id}.ipynb", "{}")
    parts = manifest.key_parts(spec.id, resolved[spec.id], spec.notebook, [], run_dir)
    manifest.write_manifest(run_dir, spec.id, parts, {}, f"notebooks/{spec.id}.ipynb")


def test_a_hand_run_reuses_a_verified_runs_phase_with_its_input_key_and_says_from_which(runs_root):
    resolved = resolve_config()
    source = create_run(resolved, select("01"), runs_root, "a-calib-run")
    data_phase_done(source, resolved)
    scratch = create_run(resolved, select("02a"), runs_root, "scratch-x")
    upstream = [get_phase("01_data")]

    found = hand_run.reuse_upstream(scratch, upstream, resolved)
    assert found == {"01_data": "a-calib-run"}
    assert manifest.verify(scratch, "01_data") == []
    assert (
        manifest.manifest_path(scratch, "01_data").read_bytes()
        == manifest.manifest_path(source, "01_data").read_bytes()
    )
    assert run_record.load(scratch)["phases"]["01_data"]["reused_from"]["run"] == "a-calib-run"
    assert hand_run.scratch_summary("02a_target", scratch, upstream, found) == (
        f"02a_target: scratch run {scratch}; reused from run a-calib-run: 01_data"
    )
    again = hand_run.reuse_upstream(scratch, upstream, resolved)  # the scratch run holds it now
    assert again == {"01_data": None}
    assert hand_run.scratch_summary("02a_target", scratch, upstream, again).endswith("; up to date there: 01_data")


def test_a_hand_run_does_not_reuse_an_altered_phase_or_one_with_other_params(runs_root):
    resolved, other = resolve_config(), resolve_config(overrides=["seed=1"])
    altered = create_run(resolved, select("01"), runs_root, "a-altered")
    data_phase_done(altered, resolved)
    (manifest.results_dir(altered, "01_data") / "splits.npz").write_bytes(b"edited after its manifest")
    seeded = create_run(other, select("01"), runs_root, "b-seed-1")
    data_phase_done(seeded, other)
    scratch = create_run(resolved, select("02a"), runs_root, "scratch-x")
    upstream = [get_phase("01_data")]

    found = hand_run.reuse_upstream(scratch, upstream, resolved)
    assert found == {} and manifest.read_manifest(scratch, "01_data") is None
    assert hand_run.scratch_summary("02a_target", scratch, upstream, found) == (
        f"02a_target: scratch run {scratch}; computed now: 01_data"
    )
