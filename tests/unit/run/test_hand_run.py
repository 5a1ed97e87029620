"""helpers.run.hand_run's save hook on a real git checkout with the project's clean filter."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from helpers.run import hand_run, nbclean
from helpers.run.project import project_root


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
