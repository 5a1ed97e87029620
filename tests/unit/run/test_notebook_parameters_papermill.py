"""Every notebook's parameters cell is what papermill reads: a comment holding '=' (">=", "<=") makes papermill
skip that line and warn "Passed unknown parameter" on every run."""

from __future__ import annotations

import json

import pytest
from papermill.translators import PythonTranslator

from helpers.run.params import RUN_DIR_PARAM, notebook_parameters
from helpers.run.project import project_root

NOTEBOOKS = sorted((project_root() / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter(path):
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    parsed = {p.name for p in PythonTranslator.inspect({"source": "".join(cell["source"])})}
    assert parsed == set(notebook_parameters(path)) | {RUN_DIR_PARAM}, path.name
