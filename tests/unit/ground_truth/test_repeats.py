"""Repeats in the ground-truth store (issue 29, item 6): a second measurement of a configuration -- another run of
the same model, one after the other or at the same time -- is kept beside the first, never replaces it; the
manifest and ``load`` say which repeat a record is, ``load`` without one takes the newest, and validation
measures against the median of the repeats with their spread beside the error.

Real onnxruntime measurements of a small digits CNN (phase 05's ``measure_runtimes``), staged as phase 05
stages them and stored as the runner stores them (``store_staged``), in real files.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from test_latency import digits_cnn, measure_on_onnxruntime, onnx_models, profile, store_files  # noqa: F401

from helpers.cli.ground_truth import main as cli_main
from helpers.ground_truth import estimator, runtime_latency
from helpers.ground_truth.layout import hardware_profile_path
from helpers.ground_truth.store import GroundTruthLoader

MODEL = "run_cnn"


def staged(result, where: Path) -> Path:
    """What phase 05 leaves among its results: the sweep staged under ``store/`` (``runtime_latency.stage``)."""

    def out(name: str) -> Path:
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        return where / name

    runtime_latency.stage(result, out)
    return where / runtime_latency.STAGED


def next_second() -> None:
    """Measurement dates have one-second resolution: start the next measurement in a later second."""
    time.sleep(1.05 - time.time() % 1)


@pytest.fixture
def root(tmp_path, profile):  # noqa: F811
    root = tmp_path / "store"
    profile.save(hardware_profile_path(root, profile.hardware_id))
    return root


def test_a_second_run_of_the_same_model_keeps_the_first_runs_records(root, onnx_models, profile, tmp_path):  # noqa: F811
    first = measure_on_onnxruntime(MODEL, onnx_models, root, (1,))
    runtime_latency.store_staged(staged(first, tmp_path / "run-1"), root)
    kept = store_files(root / profile.hardware_id / "measurements")
    next_second()
    second = measure_on_onnxruntime(MODEL, onnx_models, root, (1,))
    runtime_latency.store_staged(staged(second, tmp_path / "run-2"), root)
    now = store_files(root / profile.hardware_id / "measurements")
    assert {k: now[k] for k in kept} == kept, "the first run's records and samples are all still there, unchanged"
    assert len(now) == 2 * len(kept)

    loader = GroundTruthLoader(root)
    hw = profile.hardware_id
    assert loader.list_configurations(hw) == [(MODEL, "onnxruntime", p, 1) for p in ("fp32", "int8")]
    for precision in ("fp32", "int8"):
        repeats = loader.repeats(hw, MODEL, precision, 1)
        assert [r.run_id for r in repeats] == [first.run_id, second.run_id], "oldest first"
        assert loader.load(hw, MODEL, precision, 1).run_id == second.run_id, "the default is the newest"
        assert loader.load(hw, MODEL, precision, 1, repeat=first.run_id[:8]).run_id == first.run_id
        samples = loader.load_samples(hw, MODEL, precision, 1, repeat=first.run_id)
        assert samples["end_to_end_ms"].shape == (3,)
    with pytest.raises(FileNotFoundError, match="no repeat .* run id starting with 'ffff'.*its repeats"):
        loader.load(hw, MODEL, "fp32", 1, repeat="ffff")
    assert [r.run_id for r in loader.load_all(hw)] == [second.run_id] * 2

    manifest = json.loads((root / hw / "manifest.json").read_text())
    assert manifest["summary"]["total_measurements"] == 4
    assert sorted(e["run_id"] for e in manifest["measurements"]) == sorted([first.run_id] * 2 + [second.run_id] * 2)
    assert loader.check_manifest(hw) == []
    table = loader.summary(hw)
    assert sorted(table["repeat"]) == ["1/2", "1/2", "2/2", "2/2"]
    assert set(table.loc[table["used"], "run_id"]) == {second.run_id}
    assert table.loc[~table["used"], "note"].str.startswith("repeat 1 of 2; the default (newest) is").all()


def test_storing_the_same_staged_run_twice_changes_nothing(root, onnx_models, profile, tmp_path):  # noqa: F811
    """A phase 05 stopped between its manifest and its record stores again on resume: nothing doubles."""
    result = measure_on_onnxruntime(MODEL, onnx_models, root, (1,))
    tree = staged(result, tmp_path / "run")
    runtime_latency.store_staged(tree, root)
    records = store_files(root / profile.hardware_id / "measurements")
    assert runtime_latency.store_staged(tree, root) == result.paths
    assert store_files(root / profile.hardware_id / "measurements") == records


def store_in_process(tree: str, root: str, barrier) -> None:
    barrier.wait()
    runtime_latency.store_staged(Path(tree), Path(root))


def test_runs_storing_at_the_same_time_keep_both_and_the_manifest_lists_all(root, onnx_models, profile, tmp_path):  # noqa: F811
    """Two phase-05 runs of one model storing at once (their records may even share a date: one second)."""
    trees = []
    for n in range(2):
        result = measure_on_onnxruntime(MODEL, onnx_models, root, (1, 4))
        trees.append(str(staged(result, tmp_path / f"run-{n}")))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=store_in_process, args=(t, str(root), barrier)) for t in trees]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    loader = GroundTruthLoader(root)
    hw = profile.hardware_id
    assert all(len(loader.repeats(hw, MODEL, p, b)) == 2 for p in ("fp32", "int8") for b in (1, 4))
    assert len(list((root / hw / "measurements").rglob("*.json"))) == 8
    assert loader.check_manifest(hw) == [], "the last rebuild of the manifest saw every record"


def test_a_failed_store_leaves_the_store_as_it_was(root, onnx_models, profile, tmp_path):  # noqa: F811
    """All or nothing: a store write that fails part-way (here its efficiency curves cannot be written, after the
    records and the manifest were) is undone; a record under a taken name is never replaced."""
    runtime_latency.store_staged(staged(measure_on_onnxruntime(MODEL, onnx_models, root, (1,)), tmp_path / "a"), root)
    before = store_files(root)
    (root / profile.hardware_id / "efficiency_curves").rename(tmp_path / "curves")
    (root / profile.hardware_id / "efficiency_curves").write_text("a file where a folder must be")
    before_broken = store_files(root)
    tree = staged(measure_on_onnxruntime(MODEL, onnx_models, root, (1,)), tmp_path / "b")
    with pytest.raises(OSError):
        runtime_latency.store_staged(tree, root)
    assert store_files(root) == before_broken
    (root / profile.hardware_id / "efficiency_curves").unlink()
    (tmp_path / "curves").rename(root / profile.hardware_id / "efficiency_curves")
    assert store_files(root) == before
    taken = next(p for p in sorted(tree.rglob("*.json")) if p.parent.name == "fp32")
    target = root / taken.relative_to(tree)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("{}")
    with pytest.raises(FileExistsError, match="never replaces"):
        runtime_latency.store_staged(tree, root)
    assert target.read_text() == "{}"
    target.unlink()
    assert store_files(root) == before


def test_validation_measures_against_the_median_of_the_repeats_and_shows_their_spread(
    root,
    onnx_models,  # noqa: F811
    profile,  # noqa: F811
    tmp_path,
    capsys,
):
    """Two models (leave-one-model-out needs them), one of them measured three times."""
    runs = [measure_on_onnxruntime(MODEL, onnx_models, root, (1, 4))]
    for _ in range(2):
        next_second()
        runs.append(measure_on_onnxruntime(MODEL, onnx_models, root, (1, 4)))
    runs.append(measure_on_onnxruntime("other_cnn", onnx_models, root, (1, 4)))
    for n, result in enumerate(runs):
        runtime_latency.store_staged(staged(result, tmp_path / f"run-{n}"), root)
    loader = GroundTruthLoader(root)
    hw = profile.hardware_id
    repeats = loader.load_repeats(hw)
    table = estimator.leave_one_model_out(loader.load_all(hw), "end_to_end", repeats=repeats)
    mine = table[table["model"] == MODEL]
    assert len(mine) == 4 and (mine["repeats"] == 3).all()
    for row in mine.itertuples():
        values = [
            estimator.measured_ms(r, "end_to_end")
            for r in loader.repeats(hw, MODEL, row.precision, row.batch_size, row.runtime)
        ]
        assert row.measured_ms == pytest.approx(np.median(values))
        assert row.repeat_spread_pct == pytest.approx((max(values) - min(values)) / np.median(values) * 100)
    other = table[table["model"] == "other_cnn"]
    assert (other["repeats"] == 1).all() and other["repeat_spread_pct"].isna().all()
    summary = estimator.lomo_summary(table)
    assert summary["median_repeat_spread_pct"].notna().all()
    assert cli_main(["validate", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert "median_repeat_spread_pct" in out and "median of its repeats" in out
