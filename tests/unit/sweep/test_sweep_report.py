"""The sweep report from real member run records: one row per run, seed spread, self-contained page."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.run import run_record
from helpers.run.graph import select
from helpers.run.runner import create_run, resolve_config
from helpers.sweep import record, report

ACCURACY = {(10, 0): 0.90, (10, 1): 0.94, (50, 0): 0.96, (50, 1): 0.98}


@pytest.fixture
def sweep(tmp_path):
    """Four members (samples_per_class x seed) with 04 summaries as phase 04 writes them."""
    resolved = resolve_config()
    members = []
    for (spc, seed), int8 in ACCURACY.items():
        run_id = f"s-{spc}-{seed}"
        run_dir = create_run(resolved, select("04"), tmp_path, run_id)
        run_record.set_phase(
            run_dir,
            "04_quantize",
            status="complete",
            summary={"fp32_test_accuracy": 0.99, "int8_test_accuracy": {"minmax": int8}, "best_variant": "minmax"},
        )
        run_record.set_phase(run_dir, "01_data", status="complete", reused_from={"run": "x"}, summary={"test": 540})
        members.append({"run_id": run_id, "point": {"samples_per_class": spc, "seed": seed}, "status": "complete"})
    directory = record.sweep_dir(tmp_path, "s")
    directory.mkdir(parents=True)
    doc = {
        "sweep_id": "s",
        "status": "complete",
        "phases": ["01_data", "02_train", "04_quantize"],
        "varying": ["samples_per_class", "seed"],
        "members": members,
        "spec": {"grid": {"samples_per_class": [10, 50]}, "points": [], "seeds": [0, 1]},
    }
    return directory, doc


def test_table_has_a_row_per_member_with_varying_params_reuse_and_results(sweep):
    directory, doc = sweep
    table = report.results_table(doc, directory.parent.parent)
    assert list(table["run"]) == [m["run_id"] for m in doc["members"]]
    assert list(table.columns[:5]) == ["run", "status", "samples_per_class", "seed", "reused"]
    assert set(table["reused"]) == {"01"}
    drop = table.set_index("run")["04_quantize.int8_accuracy_drop.minmax"]
    assert drop["s-10-0"] == pytest.approx(0.09) and drop["s-50-1"] == pytest.approx(0.01)
    assert "04_quantize.best_variant" not in table.columns  # only numeric results
    assert report.metric_columns(table, doc) == [
        "04_quantize.int8_test_accuracy.minmax",
        "04_quantize.int8_accuracy_drop.minmax",
    ]


def test_seed_spread_is_mean_and_std_over_seeds(sweep):
    directory, doc = sweep
    table = report.results_table(doc, directory.parent.parent)
    stats = report.spread(table, "samples_per_class", "04_quantize.int8_test_accuracy.minmax", []).set_index(
        "samples_per_class"
    )
    assert stats.loc[10, "mean"] == pytest.approx(0.92) and stats.loc[10, "std"] == pytest.approx(np.std([0.90, 0.94]))
    assert list(stats["n"]) == [2, 2]


def test_written_csv_and_page(sweep):
    directory, doc = sweep
    csv_path, html_path = report.write(directory, doc)
    assert len(csv_path.read_text().splitlines()) == 5
    page = html_path.read_text()
    assert page.count("<figure>") == 2  # two varying results x one non-seed parameter
    assert "04_quantize.int8_accuracy_drop.minmax vs samples_per_class" in page
    assert 'src="http' not in page and page.count("data:image/png;base64,") == 2


def test_phases_are_named_by_their_ids_02a_and_02b_included(sweep, tmp_path):
    """Issue 29.9: sweep lines printed 02, 02a and 02b all as `02`."""
    from helpers.sweep.driver import member_line

    directory, doc = sweep
    run_record.set_phase(tmp_path / "s-10-0", "02b_adapt", status="complete", reused_from={"run": "x"})
    table = report.results_table(doc, directory.parent.parent)
    assert table.set_index("run").loc["s-10-0", "reused"] == "01,02b"
    outcome = {
        "status": "complete",
        "phases": {"01_data": "skipped", "02_train": "ran", "02a_target": "ran", "02b_adapt": "reused"},
        "worker": "tcp://127.0.0.1:1",
        "seconds": 3.0,
    }
    assert (
        member_line("[1/2]", "r", outcome)
        == "[1/2] r: complete in 3.0 s on tcp://127.0.0.1:1 (ran 02,02a; reused 02b; skipped 01)"
    )


def test_lost_workers_and_retries_are_in_the_table_and_on_the_page(sweep):
    """Issue 29.7: a worker killed under a member was re-run by Dask and nothing said so."""
    from helpers.sweep.driver import member_line

    directory, doc = sweep
    lost = {"at": "2026-01-01T00:00:00+00:00", "reason": "worker lost", "worker": "tcp://127.0.0.1:1"}
    doc["members"][1]["retries"] = [lost]
    doc["lost_workers"] = [{"at": lost["at"], "worker": lost["worker"], "running": ["s-10-1"]}]
    table = report.results_table(doc, directory.parent.parent)
    assert list(table["retries"]) == [0, 1, 0, 0] and "retries" not in report.metric_columns(table, doc)
    _, html_path = report.write(directory, doc)
    page = html_path.read_text()
    assert "lost workers: tcp://127.0.0.1:1 (running s-10-1)" in page
    assert "retried members: s-10-1 (worker lost on tcp://127.0.0.1:1)" in page
    line = member_line("[2/4]", "s-10-1", {"status": "complete"}, doc["members"][1]["retries"])
    assert line == "[2/4] s-10-1: complete after 1 retry (worker lost on tcp://127.0.0.1:1)"
