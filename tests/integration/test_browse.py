"""Browsing runs through the real CLI: names under the runs root everywhere, `show`, `diff`, `ls`, `params`."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import calib
from helpers.run.project import project_root

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A runs root with two small runs: phases 00+01 with defaults, and 01 alone with 10 images per class."""
    root = tmp_path_factory.mktemp("browse") / "runs"
    calib("run", "--phases", "00,01", "--no-progress", "--runs-root", str(root), "--run-id", "base")
    calib(
        "run",
        "--phases",
        "01",
        "--no-progress",
        "--runs-root",
        str(root),
        "--run-id",
        "small-slice",
        "-p",
        "samples_per_class",
        "10",
    )
    return root, root / "base", root / "small-slice"


def test_show_and_verify_take_run_names(two_runs):
    root, base, _ = two_runs
    shown = calib("show", "base", "--runs-root", str(root)).stdout
    assert shown.startswith("run base  status complete")
    assert all(len(line) <= 120 for line in shown.splitlines()), max(shown.splitlines(), key=len)
    slice_hash = json.loads((base / "run_record.json").read_text())["phases"]["01_data"]["summary"]["slice_hash"]
    assert f"slice_hash   {slice_hash[:12]}…" in shown and slice_hash not in shown  # shortened, aligned
    assert "bundle:" not in shown and "report:" not in shown  # only what exists
    assert "all manifests verify" in calib("verify", "base", "--runs-root", str(root)).stdout
    assert "all manifests verify" in calib("verify", "small", "--runs-root", str(root)).stdout  # a unique prefix
    missing = calib("show", "bsae", "--runs-root", str(root), check=False)
    assert missing.returncode == 2 and "did you mean base?" in missing.stderr


def test_resume_takes_a_run_name(two_runs):
    root, _, _ = two_runs
    out = calib("run", "--resume", "base", "--runs-root", str(root), "--no-progress").stdout
    assert "[00_environment] up to date" in out and "[01_data] up to date" in out


def test_diff_shows_what_changed_in_any_format(two_runs):
    root, _, _ = two_runs
    table = calib("diff", "base", "small-slice", "--runs-root", str(root)).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["section", "key", "base", "small-slice"]
    assert any(line.split() == ["param", "01_data.samples_per_class", "0", "10"] for line in lines), table
    assert any(line.split() == ["phase", "00_environment.status", "complete", "-"] for line in lines), table
    assert any(line.split()[:2] == ["result", "01_data.calibration"] for line in lines)
    assert not any("01_data.seed" in line for line in lines), "unchanged keys are left out by default"
    assert all(len(line) <= 120 for line in lines)
    every = calib("diff", "base", "small-slice", "--all", "--runs-root", str(root)).stdout
    assert "01_data.seed" in every and len(every.splitlines()) > len(lines)

    rows = json.loads(calib("diff", "base", "small-slice", "--format", "json", "--runs-root", str(root)).stdout)
    changed = {row["key"]: row for row in rows}
    assert changed["01_data.samples_per_class"] == {
        "section": "param",
        "key": "01_data.samples_per_class",
        "base": 0,
        "small-slice": 10,
    }
    assert changed["01_data.calibration"]["base"] == 200 and changed["01_data.calibration"]["small-slice"] == 100
    parsed = list(
        csv.DictReader(
            io.StringIO(calib("diff", "base", "small-slice", "--format", "csv", "--runs-root", str(root)).stdout)
        )
    )
    assert {r["key"] for r in parsed} == set(changed)
    markdown = calib("diff", "base", "small-slice", "--format", "md", "--runs-root", str(root)).stdout
    assert markdown.startswith("| section | key | base | small-slice |\n|---|---|---|---|")
    three = calib("diff", "base", "small-slice", "base", "--runs-root", str(root), check=False)
    assert three.returncode == 0 and str(root / "base") in three.stdout  # N runs (a repeated name: paths)


def test_ls_columns_sort_json_and_an_altered_run(two_runs, tmp_path):
    root, base, _ = two_runs
    listing = json.loads(calib("ls", "--json", "--runs-root", str(root)).stdout)
    by_name = {row["run"]: row for row in listing}
    assert by_name["base"]["status"] == "complete" and by_name["base"]["phases"] == "2/2"
    assert by_name["small-slice"]["samples_per_class"] == 10 and by_name["base"]["samples_per_class"] == 0
    assert "seed" not in by_name["base"], "only parameters that differ between the listed runs"
    assert {"fp32 acc", "int8 acc", "ece pre", "ece post", "int8 speed-up", "bundle"} <= set(by_name["base"])

    other = tmp_path / "runs"
    shutil.copytree(root, other)
    target = other / "base" / "results/01_data/splits.npz"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    rows = json.loads(calib("ls", "--json", "--sort", "run", "--reverse", "--runs-root", str(other)).stdout)
    assert [r["run"] for r in rows] == ["small-slice", "base"]
    assert rows[1]["status"] == "altered (verify fails)" and rows[0]["status"] == "complete"
    text = calib("ls", "--runs-root", str(other)).stdout
    assert "altered (verify fails)" in text and "samples_per_class" in text
    bad = calib("ls", "--sort", "fp32 accuracy", "--runs-root", str(other), check=False)
    assert bad.returncode == 2 and "did you mean 'fp32 acc'" in bad.stderr


def test_params_lists_keys_types_defaults_comments_and_phases():
    out = calib("params", "02").stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert rows["epochs"].split()[:3] == ["epochs", "int", "15"]
    assert "one-cycle peak learning rate" in rows["lr"] and rows["lr"].split()[:3] == ["lr", "float", "0.1"]
    assert "n_boot" not in rows, "phase 02 does not take n_boot"
    every = {row["key"]: row for row in json.loads(calib("params", "--format", "json").stdout)}
    assert every["seed"]["phases"] == "all" and every["n_boot"]["phases"] == "06,07"
    assert every["samples_per_class"]["comment"].startswith("calibration slice size per class")
    assert every["adapt_epochs"]["phases"] == "02b" and every["dataset"]["phases"].startswith("01,02,02a,02b,03")
    assert every["epochs"]["max"] == 1000 and every["n_boot"]["max"] == 100000 and every["lr"]["max"] is None
    assert "CALIB_LIFT_BOUNDS" in out
    bad = calib("params", "42", check=False)
    assert bad.returncode == 2 and "unknown phase '42'" in bad.stderr


def test_a_reader_that_goes_away_gets_no_traceback():
    """`calib show RUN | head`: the pipe closes before calib writes; it stops quietly (exit 1), no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers.cli", "show", "reference", "--runs-root", str(project_root() / "runs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait() == 1 and "Traceback" not in err and "BrokenPipeError" not in err, err
