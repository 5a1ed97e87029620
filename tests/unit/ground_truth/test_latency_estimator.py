"""The roofline estimator: recovers a known roofline, validates leave-one-model-out from a store."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import dataclasses
import json

import numpy as np
import pytest
from test_ground_truth import PEAK, make_record, make_subgraph

from helpers.ground_truth import curves, roofline, store
from helpers.ground_truth import estimator as le
from helpers.ground_truth.records import LatencyStats, ModelSummary
from helpers.ground_truth.store import GroundTruthLoader

# A machine whose subgraphs follow one roofline exactly (FLOP/ms, byte/ms, ms per subgraph), and whose
# runtime adds a known cost per subgraph and per call.
TRUE_ROOFLINE = roofline.Roofline(2e7, 4e6, 0.004)
SCALE, PER_SUBGRAPH_MS, CALL_OVERHEAD_MS = 1.1, 0.001, 0.02


def synthetic_record(model: str, batch: int, rng: np.random.Generator, end_to_end: bool = True):
    """6-20 subgraphs, compute- or memory-bound at random, latencies from the true roofline."""
    count = rng.integers(6, 21)
    flops = (batch * 10 ** rng.uniform(3, 7, size=count)).astype(int)
    nbytes = (batch * 10 ** rng.uniform(3, 5.5, size=count)).astype(int)
    latency = TRUE_ROOFLINE.predict(flops.astype(float), nbytes.astype(float))
    subgraphs = [
        make_subgraph(i, [ms, ms * 1.5], flops=int(f), nbytes=int(b))  # the minimum is what counts
        for i, (f, b, ms) in enumerate(zip(flops, nbytes, latency))
    ]
    total = SCALE * latency.sum() + PER_SUBGRAPH_MS * len(subgraphs) + CALL_OVERHEAD_MS
    e2e = LatencyStats.from_samples([total, total * 1.2]) if end_to_end else None
    return make_record(
        model=model,
        batch_size=batch,
        input_shape=None,
        subgraphs=subgraphs,
        model_summary=ModelSummary.from_subgraphs(subgraphs, batch, e2e),
    )


@pytest.fixture
def stored(tmp_path) -> GroundTruthLoader:
    rng = np.random.default_rng(0)
    for model in ("alpha", "beta", "gamma", "delta"):
        for batch in (1, 8):
            store.save_measurement(synthetic_record(model, batch, rng), tmp_path, update_manifest=False)
    store.rebuild_manifest(tmp_path, "test-cpu-2c")
    return GroundTruthLoader(tmp_path)


def test_fit_recovers_a_known_roofline():
    rng = np.random.default_rng(1)
    records = [synthetic_record(f"m{i}", b, rng) for i in range(4) for b in (1, 8, 32)]
    estimator = le.RooflineEstimator.fit(records)
    group = estimator.groups["onnxruntime/fp32"]
    for fitted, true in zip(dataclasses.astuple(group.roofline), dataclasses.astuple(TRUE_ROOFLINE)):
        assert fitted == pytest.approx(true, rel=0.02)
    assert group.scale == pytest.approx(SCALE, rel=0.02)
    assert group.per_subgraph_ms == pytest.approx(PER_SUBGRAPH_MS, abs=2e-4)
    assert group.call_overhead_ms == pytest.approx(CALL_OVERHEAD_MS, rel=0.1)
    fresh = synthetic_record("unseen", 4, rng)
    assert estimator.predict(fresh) == pytest.approx(fresh.model_summary.end_to_end_latency.min, rel=0.02)


def test_leave_one_model_out_on_a_stored_set(stored):
    records = stored.load_all("test-cpu-2c")
    validation = le.leave_one_model_out(records)
    assert len(validation) == 8 and set(validation["model"]) == {"alpha", "beta", "gamma", "delta"}
    assert validation["ape_pct"].median() < 2.0
    table = le.mape_table(validation)
    assert table.shape == (4, 2) and list(table.columns.get_level_values("batch_size")) == [1, 8]


def test_effective_peak_never_exceeds_the_theoretical(stored):
    estimator = le.RooflineEstimator.fit(stored.load_all("test-cpu-2c"))
    assert all(group["peak_fraction"] <= 1 + 1e-9 for group in estimator.to_dict().values())
    assert estimator.groups["onnxruntime/fp32"].theoretical_peak_flops == PEAK


def test_records_without_end_to_end_latency_only_train():
    rng = np.random.default_rng(2)
    records = [synthetic_record(m, b, rng, end_to_end=(m != "legacy")) for m in ("legacy", "a", "b") for b in (1, 8)]
    validation = le.leave_one_model_out(records)
    assert "legacy" not in set(validation["model"])


def test_unfitted_group_and_too_few_models_are_errors():
    rng = np.random.default_rng(3)
    estimator = le.RooflineEstimator.fit([synthetic_record("a", 1, rng)])
    with pytest.raises(KeyError, match="without onnxruntime/int8"):
        estimator.predict(make_record(precision="int8"))
    with pytest.raises(ValueError, match="at least two models"):
        le.leave_one_model_out([synthetic_record("a", 1, rng)])
    with pytest.raises(ValueError, match="no records"):
        le.RooflineEstimator.fit([])


def test_figure_plots_every_validated_record(stored):
    validation = le.leave_one_model_out(stored.load_all("test-cpu-2c"))
    fig = le.predicted_vs_measured_figure(validation)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and sum(len(c.get_offsets()) for c in ax.collections) == len(validation)


def test_efficiency_curves_are_written_per_precision_with_a_figure(stored):
    root, hw = stored.root, "test-cpu-2c"
    paths = curves.write_efficiency_curves(root, hw)
    assert [p.relative_to(root / hw).as_posix() for p in paths] == [
        "efficiency_curves/fp32/curves.json",
        "efficiency_curves/fp32/curves.png",
    ]
    document = json.loads(paths[0].read_text())
    assert document["target"] == "end_to_end"  # every record of the project's sweep has one
    runtime = document["runtimes"]["onnxruntime"]
    assert runtime["roofline"] == le.RooflineEstimator.fit(stored.load_all(hw)).to_dict()["onnxruntime/fp32"]
    conv = runtime["curves"]["conv"]
    assert sum(conv["count"]) == sum(s.flops > 0 for r in stored.load_all(hw) for s in r.subgraphs)
    assert all(0 < e for e in conv["efficiency_median"])
    first = paths[0].read_bytes()
    curves.write_efficiency_curves(root, hw)
    assert paths[0].read_bytes() == first  # derived data is deterministic


def test_estimator_report_summarises_lomo(stored):
    records = stored.load_all("test-cpu-2c")
    report, validation = le.estimator_report(records)
    expected = le.leave_one_model_out(records)
    assert report["models"] == ["alpha", "beta", "delta", "gamma"] and report["records"] == 8
    assert set(report["groups"]) == {"onnxruntime/fp32"}
    assert report["lomo"]["available"] and report["lomo"]["predictions"] == len(expected) == len(validation)
    assert report["lomo"]["median_ape_pct"] == pytest.approx(expected["ape_pct"].median())
    assert set(report["lomo"]["mape_pct_by_model"]) == set(report["models"])
    assert set(report["lomo"]["mape_pct_by_group"]) == {"onnxruntime/fp32/b1", "onnxruntime/fp32/b8"}
    json.dumps(report, allow_nan=False)


def test_estimator_report_says_why_lomo_is_missing():
    rng = np.random.default_rng(4)
    one_model = [synthetic_record("a", b, rng) for b in (1, 8)]
    report, validation = le.estimator_report(one_model)
    assert validation is None and not report["lomo"]["available"] and "['a']" in report["lomo"]["reason"]
    no_shared_group = one_model + [dataclasses.replace(synthetic_record("b", 1, rng), precision="int8")]
    report, validation = le.estimator_report(no_shared_group)
    assert validation is None and set(report["groups"]) == {"onnxruntime/fp32", "onnxruntime/int8"}
    assert "two models" in report["lomo"]["reason"]
