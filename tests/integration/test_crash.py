"""Crash safety: `kill -9` of `calib run` at random points, then `--resume`, gives the uninterrupted run.

One chain per trial: a run is killed in one phase, its resume is killed in a later phase, and so
on; the last resume completes. Kill points are drawn (seeded) per phase among: a random moment
while the phase's kernel works, right after the kernel wrote its (pending) manifest -- before
papermill wrote the executed notebook --, and right after the runner promoted the manifest --
before the run record said so. After every kill ``calib verify`` must say "incomplete but intact"
(exit 3, never damaged); at the end the run must verify and its results, manifests, executed
notebooks and record must match the uninterrupted run's.

Default selection: one chain of 3 kills, one of each kind, in 3 of the 6 phases of a small
configuration, plus its uninterrupted baseline run: about 3.5 minutes on an idle 2-core machine
(baseline 86 s, chain 104-118 s; mostly kernel start-up). ``-m slow``: CALIB_CRASH_TRIALS more
chains (default 4) of 6 kills each, one in every phase.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from cli_runner import calib, only_run

FAST = [
    "--no-progress",
    "--phases",
    "00,07",
    "-p",
    "epochs=1",
    "-p",
    "calibration_methods=[minmax]",
    "-p",
    "size_sweep=[]",
    "-p",
    "sensitivity=false",
    "-p",
    "torch_pt2e=false",
    "-p",
    "n_boot=20",
    "-p",
    "adaptation=none",  # 02a/02b run, as pass-through: the chain's kill points are the phases below
]
PHASES = ["00_environment", "01_data", "02_train", "04_quantize", "06_confidence", "07_selective"]
KINDS = ("working", "pending_manifest", "manifest")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    calib("run", "--runs-root", str(root), *FAST)
    return only_run(root)


def trigger(run: Path, phase: str, kind: str) -> Path:
    return {
        "working": run / "logs" / f"{phase}.jsonl",
        "pending_manifest": run / "manifests" / f"{phase}.pending.json",
        "manifest": run / "manifests" / f"{phase}.json",
    }[kind]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "helpers.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def state(path: Path | None):
    return path.stat().st_size if path is not None and path.exists() else None


def kill_when(proc: subprocess.Popen, root: Path, run: Path | None, phase: str, kind: str, delay: float) -> Path | None:
    """Wait for the kill point (its file appearing or growing), then kill -9 the process group; the run (None: it finished)."""
    before = state(trigger(run, phase, kind) if run else None)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        runs = [p for p in root.iterdir() if (p / "run_record.json").exists()] if root.is_dir() else []
        if runs and state(trigger(runs[0], phase, kind)) not in (None, before):
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return runs[0]
        time.sleep(0.002)
    proc.wait()
    return None


def comparable(run: Path) -> dict[str, bytes]:
    """Every results/ and manifests/ file (bytes) of a run."""
    return {
        p.relative_to(run).as_posix(): p.read_bytes()
        for sub in ("results", "manifests")
        for p in sorted((run / sub).rglob("*"))
        if p.is_file()
    }


def check_like_baseline(run: Path, baseline: Path) -> None:
    assert calib("verify", str(run), check=False).returncode == 0
    assert comparable(run) == comparable(baseline), "results and manifests must equal the uninterrupted run's"
    record, expected = (json.loads((r / "run_record.json").read_text()) for r in (run, baseline))
    assert record["status"] == "complete" and record["config_hash"] == expected["config_hash"]
    assert set(PHASES) <= set(record["phases"]) == set(expected["phases"])  # 02a/02b run too, unkilled
    assert {row["status"] for row in record["phases"].values()} == {"complete"}
    for pid in PHASES:
        row, base = record["phases"][pid], expected["phases"][pid]
        assert row["manifest_sha256"] == base["manifest_sha256"] and row["summary"] == base["summary"]
        done, ref = (nbformat.read(r / "notebooks" / f"{pid}.ipynb", as_version=4) for r in (run, baseline))
        assert [c.source for c in done.cells] == [c.source for c in ref.cells]
        code = [c for c in done.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{pid}: every cell of the executed notebook ran"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    results = {k: v for k, v in record["artifacts"].items() if k.startswith(("results/", "manifests/"))}
    assert results == {k: v for k, v in expected["artifacts"].items() if k.startswith(("results/", "manifests/"))}


def crash_chain(tmp_path: Path, baseline: Path, seed: int, kills: int) -> dict:
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(kills)]  # every kind of kill point, in random phases
    rng.shuffle(kinds)
    points = list(zip(sorted(rng.sample(PHASES, kills), key=PHASES.index), kinds))
    durations = {
        pid: row["duration_s"] for pid, row in json.loads((baseline / "run_record.json").read_text())["phases"].items()
    }
    root = tmp_path / "runs"
    run, stats = None, {"kills": 0, "damaged_after_kill": 0, "points": points}
    for phase, kind in points:
        proc = start(
            ["run", "--runs-root", str(root), *FAST] if run is None else ["run", "--resume", str(run), "--no-progress"]
        )
        delay = rng.uniform(0.0, 0.5 * durations[phase]) if kind == "working" else 0.0
        killed = kill_when(proc, root, run, phase, kind, delay)
        assert killed is not None, f"the run finished before the kill point {phase}/{kind}"
        run = killed
        stats["kills"] += 1
        verdict = calib("verify", str(run), check=False)
        stats["damaged_after_kill"] += verdict.returncode == 1
        assert verdict.returncode == 3, f"after a kill at {phase}/{kind} verify must say incomplete:\n{verdict.stdout}"
    out = calib("run", "--resume", str(run), "--no-progress").stdout
    assert "re-runs:" in out
    check_like_baseline(run, baseline)
    assert not list(run.rglob(".tmp-*")) and not list(run.rglob("*.pending.json"))
    return stats


def test_kill_9_in_three_phases_then_resume_equals_the_uninterrupted_run(baseline, tmp_path):
    """One kill of each kind (mid-phase, pending manifest, manifest written), in random phases; the slow
    chains below kill 6 times per trial."""
    stats = crash_chain(tmp_path, baseline, seed=int(os.environ.get("CALIB_CRASH_SEED", "14")), kills=3)
    assert stats["kills"] == 3 and stats["damaged_after_kill"] == 0
    print(f"crash chain: {stats}")


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(int(os.environ.get("CALIB_CRASH_TRIALS", "4"))))
def test_more_crash_chains(baseline, tmp_path, trial):
    stats = crash_chain(tmp_path, baseline, seed=100 + trial, kills=6)
    assert stats["kills"] == 6 and stats["damaged_after_kill"] == 0
    print(f"crash chain {trial}: {stats}")
