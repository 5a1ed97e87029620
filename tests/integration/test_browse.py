"""Browsing runs through the real CLI: names under the runs root everywhere, `show`, `diff`, `ls`, `params`."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import calib
from helpers.run import headline, run_record
from helpers.run.project import project_root

pytestmark = pytest.mark.integration


def one_run(root: Path, run_id: str, phases: str, *params: str) -> None:
    """A real ``calib run`` of ``phases`` named ``run_id`` under ``root`` (``params``: ``-p`` values)."""
    options = [arg for param in params for arg in ("-p", param)]
    calib("run", "--phases", phases, "--no-progress", "--runs-root", str(root), "--run-id", run_id, *options)


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A runs root with three small runs: phases 00+01 with defaults (``base``), 01 alone with 10 images
    per class (``small-slice``), and 01 alone with a validation fraction a hair above the default's
    (``fine-fraction``, 0.30001 against 0.3)."""
    root = tmp_path_factory.mktemp("browse") / "runs"
    one_run(root, "base", "00,01")
    one_run(root, "small-slice", "01", "samples_per_class=10")
    one_run(root, "fine-fraction", "01", "val_fraction=0.30001")
    return root, root / "base", root / "small-slice"


def cells(line: str) -> list[str]:
    """A text table's line as its cells (columns are two or more spaces apart)."""
    return re.split(r"\s{2,}", line.strip())


def table_rows(text: str) -> list[list[str]]:
    """The rows of a printed table, as cells: its lines after the header, up to the notes in parentheses."""
    lines = text.splitlines()[1:]
    return [cells(line) for line in lines[: next((i for i, x in enumerate(lines) if x.startswith("(")), len(lines))]]


def test_show_and_verify_take_run_names(small_runs):
    root, base, _ = small_runs
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


def test_resume_takes_a_run_name(small_runs):
    root, _, _ = small_runs
    out = calib("run", "--resume", "base", "--runs-root", str(root), "--no-progress").stdout
    assert "[00_environment] up to date" in out and "[01_data] up to date" in out


def test_diff_shows_what_changed_in_any_format(small_runs):
    root, _, _ = small_runs
    table = calib("diff", "base", "small-slice", "--runs-root", str(root)).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["section", "key", "base", "small-slice"]
    rows = table_rows(table)
    assert ["param", "samples_per_class", "0", "10"] in rows, table  # one key of one value: one row
    assert ["phase", "phases", "00 01", "01"] in rows, table  # which phases each run holds
    assert ["result", "01_data.calibration", "200", "100"] in rows, table
    assert not any("00_environment" in line for line in lines), "a phase a run lacks is no difference"
    assert not any("seed" in line for line in lines), "unchanged keys are left out by default"
    assert all(len(line) <= 120 for line in lines)

    every = calib("diff", "base", "small-slice", "--all", "--runs-root", str(root)).stdout
    every_rows = table_rows(every)
    assert ["phase", "00_environment.status", "complete", "not run"] in every_rows, every
    assert [row[1] for row in every_rows].count("seed") == 1 and [row[1] for row in every_rows].count("dataset") == 1
    assert ["param", "data_dir", "''", "''"] in every_rows  # an empty string is shown, not a blank
    assert "not run: the run lacks that phase" in every

    rows = json.loads(calib("diff", "base", "small-slice", "--format", "json", "--runs-root", str(root)).stdout)
    changed = {row["key"]: row for row in rows}
    assert changed["samples_per_class"] == {
        "section": "param",
        "key": "samples_per_class",
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


def test_diff_prints_values_that_differ_differently(small_runs):
    """0.30001 against 0.3 (4 significant digits printed both as 0.3): parameters exactly, and every
    row whose raw values differ has cells that differ."""
    root, _, _ = small_runs
    table = calib("diff", "base", "fine-fraction", "--all", "--runs-root", str(root)).stdout
    rows = {cell[1]: cell for cell in table_rows(table)}
    assert rows["val_fraction"] == ["param", "val_fraction", "0.3", "0.30001"], table
    raw = json.loads(
        calib("diff", "base", "fine-fraction", "--all", "--format", "json", "--runs-root", str(root)).stdout
    )
    for row in raw:
        if row["base"] != row["fine-fraction"]:
            assert rows[row["key"]][2] != rows[row["key"]][3], (row, rows[row["key"]])


def test_ls_columns_sort_json_and_an_altered_run(small_runs, tmp_path):
    root, base, _ = small_runs
    listing = json.loads(calib("ls", "--json", "--runs-root", str(root)).stdout)
    by_name = {row["run"]: row for row in listing}
    assert by_name["base"]["status"] == "complete" and by_name["base"]["phases"] == "2/2"
    assert by_name["small-slice"]["samples_per_class"] == 10 and by_name["base"]["samples_per_class"] == 0
    assert by_name["fine-fraction"]["val_fraction"] == 0.30001 and by_name["base"]["val_fraction"] == 0.3
    headline_columns = {"fp32 acc", "int8 acc", "ece pre", "ece post", "int8 speed-up", "bundle"}
    params = set(by_name["base"]) - headline_columns - {"run", "created", "status", "phases"}
    assert params == {"samples_per_class", "val_fraction"}, "only parameters that differ (not run: no difference)"
    assert by_name["base"]["fp32 acc"] == "not run"

    text = calib("ls", "--runs-root", str(root)).stdout
    table = {row[0]: row for row in table_rows(text)}
    header = cells(text.splitlines()[0])
    assert table["fine-fraction"][header.index("val_fraction")] == "0.30001"
    assert table["base"][header.index("val_fraction")] == "0.3"
    assert table["base"][header.index("fp32 acc")] == "not run"

    by_result = json.loads(calib("ls", "--json", "--sort", "01_data.calibration", "--runs-root", str(root)).stdout)
    assert [r["run"] for r in by_result][0] == "small-slice"  # any metric, shown as a column
    assert [r["01_data.calibration"] for r in by_result] == [100, 200, 200]

    other = tmp_path / "runs"
    shutil.copytree(root, other)
    target = other / "base" / "results/01_data/splits.npz"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    rows = json.loads(calib("ls", "--json", "--sort", "run", "--reverse", "--runs-root", str(other)).stdout)
    assert [r["run"] for r in rows] == ["small-slice", "fine-fraction", "base"]
    assert rows[2]["status"] == "altered (verify fails)" and rows[0]["status"] == "complete"
    text = calib("ls", "--runs-root", str(other)).stdout
    assert "altered (verify fails)" in text and "samples_per_class" in text
    bad = calib("ls", "--sort", "fp32 accuracy", "--runs-root", str(other), check=False)
    assert bad.returncode == 2 and "did you mean" in bad.stderr and "'fp32 acc'" in bad.stderr


def test_diff_sort_and_ls_all(small_runs):
    """``calib diff --sort METRIC`` orders the runs and ``calib ls --all`` shows every parameter."""
    root, _, _ = small_runs
    out = calib(
        "diff",
        "base",
        "small-slice",
        "fine-fraction",
        "--runs-root",
        str(root),
        "--format",
        "json",
        "--sort",
        "01_data.calibration",
    ).stdout
    assert list(json.loads(out)[0])[2:] == ["small-slice", "base", "fine-fraction"]
    every = json.loads(calib("ls", "--runs-root", str(root), "--json", "--no-verify", "--all").stdout)
    assert every[0]["seed"] == 0 and every[0]["dataset"] == "digits"


def test_headline_latencies_name_their_runtime_and_batch(default_run, small_runs):
    """The latency rows come from one runtime at one batch, say which, and agree: the speed-up is the
    quotient of the two latencies shown beside it."""
    _, base, _ = small_runs
    head = headline.for_run(default_run, run_record.load(default_run))
    chosen = json.loads((default_run / "manifests/06_confidence.json").read_text())["summary"]["chosen"]["fp32"]
    assert head["calibration_map"] == chosen
    assert f"% ({chosen}) |" in headline.text(head)  # the ECE after is the chosen map's, and says so
    latency = json.loads((default_run / headline.LATENCY_FILE).read_text())
    measured = {
        m["precision"]: m["contention_free_ms"]
        for m in latency["measurements"]
        if (m["runtime"], m["batch_size"]) == (head["latency_runtime"], head["latency_batch"])
    }
    assert (head["fp32_latency_ms"], head["int8_latency_ms"]) == (measured["fp32"], measured["int8"])
    assert head["int8_speedup"] == pytest.approx(measured["fp32"] / measured["int8"])
    setting = headline.latency_setting(head)
    assert setting == f"{head['latency_runtime']}, batch {head['latency_batch']}" == "onnxruntime, batch 1"

    every = calib("diff", str(default_run), str(base), "--all").stdout
    rows = table_rows(every)
    assert rows[0][0] == "headline" and [r[0] for r in rows].index("param") > 0  # the headline first
    by_key = {r[1]: r for r in rows}
    speedup = by_key[f"INT8 vs FP32 latency ({setting})"]
    assert re.fullmatch(r"\d+\.\dx (faster|slower)", speedup[2]) and speedup[3] == "not run", speedup
    assert re.fullmatch(r"[\d.e-]+ ms", by_key[f"FP32 latency ({setting})"][2])
    assert re.fullmatch(r"[\d.e-]+ ms", by_key[f"INT8 latency ({setting})"][2])
    assert re.fullmatch(r"\d+\.\d\d%", by_key["FP32 test accuracy"][2])
    assert [r[1] for r in rows].count("dataset") == 1  # shared by nine phases, one value: one row

    changed = calib("diff", str(default_run), str(base)).stdout
    assert [row[:2] for row in table_rows(changed)] == [["phase", "phases"]], changed

    listing = calib("ls", "--runs-root", str(default_run.parent)).stdout
    header, row = map(cells, listing.splitlines()[:2])
    assert re.fullmatch(r"\d+\.\dx (faster|slower)", row[header.index("int8 speed-up")])
    assert f"int8 speed-up: INT8 vs FP32 latency, {setting}" in listing


def test_show_puts_the_source_metrics_beside_the_deployment_ones(default_run):
    """Issue 24: calib show carries 02b's 2x2 table and 06's calibration under shift, numbers from the run's files."""
    out = calib("show", str(default_run)).stdout
    doc = json.loads((default_run / "results/02b_adapt/adaptation.json").read_text())
    two_by_two = out.split("accuracy and ECE before -> after adaptation (test):\n")[1].split("\n\n")[0]
    for domain in ("source", "target"):
        row = next(line for line in two_by_two.splitlines() if line.startswith(f"{domain} test"))
        assert f"{doc['accuracy'][domain]['after']['accuracy']:.4f}" in row, row
    shift = out.split("calibration under shift (temperature_scaling fitted on each domain's val split, test):\n")[1]
    assert "fitted on" in shift.splitlines()[1] and "target val" in shift and "source val" in shift
    assert out.index("target val") < out.index("report: ")  # the tables sit under the headline, before the paths


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
