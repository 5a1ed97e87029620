"""The cross-run phase cache on real run directories, real files and real concurrent processes."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from helpers.run import atomic, cache, manifest, run_record
from helpers.run.graph import select
from helpers.run.runner import create_run, resolve_config

PARTS = {"phase": "02_train", "params": "p", "notebook": "n", "helpers": "h", "upstream": {}}
KEY = manifest.key_of(PARTS)
OTHER_PARTS = {**PARTS, "params": "other"}
OTHER_KEY = manifest.key_of(OTHER_PARTS)


def new_run(root: Path, name: str) -> Path:
    return create_run(resolve_config(), select("02"), root, name)


def produce(run_dir: Path, phase_id: str = "02_train", parts: dict = PARTS, payload: bytes = b"weights") -> None:
    """What a phase leaves: results files, an executed notebook, then its manifest (last)."""
    results = manifest.results_dir(run_dir, phase_id)
    atomic.write_bytes(results / "model.pt", payload)
    atomic.write_json(results / "sub" / "metrics.json", {"accuracy": 0.5})
    atomic.write_text(run_dir / "notebooks" / f"{phase_id}.ipynb", "{}")
    manifest.write_manifest(run_dir, phase_id, parts, {"accuracy": 0.5}, f"notebooks/{phase_id}.ipynb")


def test_verified_phase_is_hardlinked_with_its_manifest_bytes_and_recorded(tmp_path):
    source, dest = new_run(tmp_path, "a-source"), new_run(tmp_path, "b-dest")
    produce(source)
    computed = []
    outcome = cache.run_once(dest, "02_train", KEY, lambda: computed.append(1), log=lambda _: None)
    assert outcome == "reused" and computed == []
    for rel in ("model.pt", "sub/metrics.json"):
        a, b = manifest.results_dir(source, "02_train") / rel, manifest.results_dir(dest, "02_train") / rel
        assert a.stat().st_ino == b.stat().st_ino  # one inode: a hardlink
    manifests = [manifest.manifest_path(r, "02_train").read_bytes() for r in (source, dest)]
    assert manifests[0] == manifests[1]  # byte for byte: downstream input keys match the source's
    assert manifest.verify(dest, "02_train") == []
    assert (dest / "notebooks" / "02_train.ipynb").is_file()
    row = run_record.load(dest)["phases"]["02_train"]
    assert row["status"] == "complete" and row["input_key"] == KEY and row["summary"] == {"accuracy": 0.5}
    assert row["reused_from"] == {"run": "a-source", "files": 2, "linked": 2, "copied": 0}


def test_other_key_or_altered_source_is_computed_not_reused(tmp_path):
    source, dest = new_run(tmp_path, "a-source"), new_run(tmp_path, "b-dest")
    produce(source)
    other = cache.run_once(dest, "02_train", OTHER_KEY, lambda: produce(dest, parts=OTHER_PARTS), log=lambda _: None)
    assert other == "ran" and "reused_from" not in run_record.load(dest)["phases"]["02_train"]
    (manifest.results_dir(source, "02_train") / "model.pt").write_bytes(b"tampered")  # same size class, other bytes
    messages = []
    third = new_run(tmp_path, "c-third")
    assert cache.run_once(third, "02_train", KEY, lambda: produce(third), log=messages.append) == "ran"
    assert any("do not verify" in m for m in messages)
    assert manifest.verify(third, "02_train") == []  # its own computation, not the tampered files


@pytest.mark.parametrize("phase_id", sorted(cache.NOT_REUSED))
def test_machine_and_run_bound_phases_are_always_computed(tmp_path, phase_id):
    source, dest = new_run(tmp_path, "a-source"), new_run(tmp_path, "b-dest")
    produce(source, phase_id)
    assert phase_id in {s.id for s in select(None)}
    assert cache.run_once(dest, phase_id, KEY, lambda: None, log=lambda _: None) == "ran"


def contender(root: str, name: str, counter: str, barrier) -> str:
    """One of two processes needing the same phase at the same moment."""
    run_dir = Path(root) / name

    def compute():
        with open(counter, "a") as f:
            f.write(name + "\n")
        time.sleep(1.5)  # long enough that the other process is surely waiting on the claim
        produce(run_dir)

    barrier.wait()
    return cache.run_once(run_dir, "02_train", KEY, compute, log=lambda _: None)


def test_two_processes_needing_the_same_phase_compute_it_once(tmp_path):
    runs = [new_run(tmp_path, name).name for name in ("a-one", "b-two")]
    counter = tmp_path / "computed.txt"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(2)
    with ctx.Pool(2) as pool:
        outcomes = pool.starmap(contender, [(str(tmp_path), r, str(counter), barrier) for r in runs])
    assert sorted(outcomes) == ["ran", "reused"]
    assert len(counter.read_text().splitlines()) == 1
    for name in runs:
        assert manifest.verify(tmp_path / name, "02_train") == []
    owner = json.loads(cache.claim_path(tmp_path, KEY).with_suffix(".owner.json").read_text())
    assert owner["phase"] == "02_train" and owner["run"] in runs
