"""``calib sweep --resume`` and ``calib verify`` agree on which members are done (issue 29, item 8).

The states a killed sweep leaves a member in, built on copies of the committed reference run (real files,
no kernel): the sweep's decision (``record.member_done``) must be verify's "complete and intact", in every
one of them -- above all the window between a phase's manifest and its record row (the row says
``running`` while the manifest exists), where the run's status may still say ``complete`` from an
earlier execution of the run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.run import integrity, manifest, run_record
from helpers.run.project import project_root
from helpers.sweep import record

REFERENCE = project_root() / "runs" / "reference"


@pytest.fixture
def member(tmp_path) -> Path:
    dest = tmp_path / "runs" / "member-03"
    shutil.copytree(REFERENCE, dest)
    run_record.save(dest, json.loads((dest / run_record.FILENAME).read_text()))  # as this version writes it
    return dest


def edit(run_dir: Path, status: str | None = None, **rows: str) -> None:
    """Rewrite the record as the runner would have left it: the run's status, phase rows' statuses."""
    rec = run_record.load(run_dir)
    if status:
        rec["status"] = status
    for phase_id, row_status in rows.items():
        rec["phases"][phase_id]["status"] = row_status
    run_record.save(run_dir, rec)


def remove_manifest(run_dir: Path, phase_id: str) -> None:
    manifest.manifest_path(run_dir, phase_id).unlink()


def alter_registry(run_dir: Path) -> None:
    rec = run_record.load(run_dir)
    rec["artifacts"]["results/04_quantize/quant_report.json"]["sha256"] = "0" * 64
    run_record.save(run_dir, rec)


STATES = {
    "complete": (lambda r: None, True),
    "killed inside 04": (
        lambda r: (remove_manifest(r, "04_quantize"), edit(r, "running", **{"04_quantize": "running"})),
        False,
    ),
    "killed between 04's manifest and its row": (lambda r: edit(r, "running", **{"04_quantize": "running"}), False),
    "that window, the run's status still complete from an earlier execution": (
        lambda r: edit(r, **{"04_quantize": "running"}),
        False,
    ),
    "04 failed, its manifest gone, status complete": (
        lambda r: (remove_manifest(r, "04_quantize"), edit(r, **{"04_quantize": "failed"})),
        False,
    ),
    "a registry entry altered": (alter_registry, False),
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_the_sweep_calls_a_member_done_exactly_when_verify_calls_it_complete(member, state):
    make, done = STATES[state]
    make(member)
    verified = integrity.check_run(member).exit_code == integrity.COMPLETE
    assert verified == done, (state, integrity.check_run(member))
    assert record.member_done(member) == verified, state


def test_a_phase_that_starts_running_makes_the_run_running(member):
    """A complete run executed again (``--resume`` re-running a phase): from the phase's first row on, the run's
    status no longer says complete, so a crash in the window above leaves an honest record."""
    run_record.set_phase(member, "04_quantize", status="running")
    assert run_record.load(member)["status"] == "running"
