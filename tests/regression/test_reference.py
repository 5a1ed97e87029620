"""Regression against the committed reference run (runs/reference).

nbval re-executes every reference notebook from a temporary copy (the committed files are never
written) and compares each cell's output with the stored one, after the sanitizers in
tests/regression/nbval_sanitize.cfg. The re-executed artifacts are then compared with the committed ones:
deterministic files byte for byte, numeric results with a tolerance.
Refresh the reference deliberately with `make reference` and review the diff.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.run.project import project_root
from helpers.run.runner import KERNEL_ENV

ROOT = project_root()
REFERENCE = ROOT / "runs" / "reference"


def copy_reference(tmp_path_factory) -> Path:
    if not (REFERENCE / "run_record.json").exists():
        pytest.fail("runs/reference is missing: create it with `make reference` and commit it")
    copy = tmp_path_factory.mktemp("nbval") / "reference"
    shutil.copytree(REFERENCE, copy)
    return copy


def nbval(run_dir: Path, notebooks: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, **KERNEL_ENV}
    env.pop("CALIB_MANAGED_RUN", None)  # the kernels keep the copy's run_record themselves
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "--nbval", "--nbval-current-env", "--nbval-cell-timeout=1800",
                           "--nbval-sanitize-with", str(ROOT / "tests" / "regression" / "nbval_sanitize.cfg"),
                           *map(str, notebooks)], cwd=run_dir, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def reexecuted(tmp_path_factory) -> Path:
    copy = copy_reference(tmp_path_factory)
    proc = nbval(copy, sorted((copy / "notebooks").glob("*.ipynb")))
    assert proc.returncode == 0, f"nbval found differences:\n{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}"
    return copy


def test_nbval_catches_a_changed_output(tmp_path_factory):
    import nbformat

    copy = copy_reference(tmp_path_factory)
    path = copy / "notebooks" / "01_data.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "Loaded" in "".join(o.get("text", "") for o in c.outputs))
    stream = next(o for o in cell.outputs if "Loaded" in o.get("text", ""))
    stream["text"] = stream["text"].replace("Loaded", "Loaded 1 extra +")
    nbformat.write(nb, path)
    proc = nbval(copy, [path])
    assert proc.returncode != 0 and "Loaded 1 extra" in proc.stdout


def test_nbval_reexecutes_every_reference_notebook(reexecuted):
    executed = {p.stem for p in (reexecuted / "notebooks").glob("*.ipynb")}
    assert {p.stem for p in (REFERENCE / "manifests").glob("*.json")} <= executed


def test_data_phase_reproduces_exactly(reexecuted):
    for name in ("splits.npz", "calibration_slice.npz", "distribution.json"):
        assert (reexecuted / "results/01_data" / name).read_bytes() == (REFERENCE / "results/01_data" / name).read_bytes()
    again = json.loads((reexecuted / "results/01_data/distribution.json").read_text())
    assert again["slice_hash"] == json.loads((REFERENCE / "manifests/01_data.json").read_text())["summary"]["slice_hash"]


def summaries(run_dir: Path) -> dict:
    return {p.stem: json.loads(p.read_text())["summary"] for p in (run_dir / "manifests").glob("*.json")}


@pytest.mark.parametrize("phase, key, tolerance", [
    ("02_train", "test_accuracy", 0.01), ("02_train", "test_mcc", 0.01),
    ("04_quantize", "fp32_test_accuracy", 0.01), ("04_quantize", "divided_by_255_test_accuracy", 0.05),
    ("06_confidence", "ece_post.fp32", 0.01), ("07_selective", "test_coverage", 0.02),
    ("07_selective", "threshold", 0.02)])
def test_key_results_match_the_reference_within_tolerance(reexecuted, phase, key, tolerance):
    def lookup(tree, dotted):
        for part in dotted.split("."):
            tree = tree[part]
        return tree

    expected = summaries(REFERENCE)
    if phase not in expected:
        pytest.skip(f"the reference run has no phase {phase}")
    assert lookup(summaries(reexecuted)[phase], key) == pytest.approx(lookup(expected[phase], key), abs=tolerance)


def test_reference_manifests_verify():
    from helpers.run import manifest

    for path in (REFERENCE / "manifests").glob("*.json"):
        assert manifest.verify(REFERENCE, path.stem) == []
