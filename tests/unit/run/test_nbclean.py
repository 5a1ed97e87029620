"""Source notebooks stay output-free: the committed ones are checked, and the git clean filter strips outputs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
import pytest

from helpers.run import nbclean, run_record
from helpers.run.project import project_root


def test_committed_source_notebooks_hold_no_outputs():
    problems = nbclean.check()
    assert problems == [], "\n".join(problems) + "\nstrip them: python -m helpers.run.nbclean install, then git add"


def executed_copy(tmp_path):
    """A source notebook as JupyterLab saves it after Run All: outputs, counts, editor metadata."""
    nb = nbformat.read(project_root() / "notebooks/01_data.ipynb", as_version=nbformat.NO_CONVERT)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    return nb


def test_problems_name_cells_with_outputs(tmp_path):
    found = nbclean.problems(executed_copy(tmp_path), "01_data.ipynb")
    assert found and all(line.startswith("01_data.ipynb cell ") for line in found)
    assert any("has 1 output(s)" in line for line in found) and any("execution_count" in line for line in found)


def test_clean_filter_gives_back_the_committed_bytes(tmp_path):
    source = project_root() / "notebooks/01_data.ipynb"
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(executed_copy(tmp_path), dirty)
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.run.nbclean", "clean"],
        input=dirty.read_text(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == source.read_text()  # outputs, counts and editor metadata gone; ids and tags kept


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_with_the_filter_commits_no_outputs_and_stays_clean(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(project_root() / ".gitattributes", repo / ".gitattributes")
    notebook = repo / "notebooks/01_data.ipynb"
    shutil.copy(project_root() / "notebooks/01_data.ipynb", notebook)
    git = lambda *a: (
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *a],
            cwd=repo,  # noqa: E731
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    git("init", "-q")
    nbclean.install(repo)
    git("add", "-A")
    git("commit", "-qm", "source")
    nbformat.write(executed_copy(tmp_path), notebook)  # "Run All" saved outputs into the source notebook
    assert run_record.git_state(repo)["dirty"] is False, "outputs alone do not make a run record's git dirty"
    assert nbclean.check(repo) == []
    assert "hello" not in git("show", "HEAD:notebooks/01_data.ipynb")
    notebook.write_text(notebook.read_text().replace("seed = 0", "seed = 1"))  # a real edit is still seen
    assert run_record.git_state(repo)["dirty"] is True
