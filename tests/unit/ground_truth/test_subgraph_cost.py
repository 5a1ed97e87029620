"""The latency estimator's fitted components on synthetic machines that follow a known cost law: it recovers the law's
parameters, chooses its knots and its precision transfer by a procedure that sees only the training records, and a
leave-one-out prediction never depends on the held-out record."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_ground_truth import PEAK, make_record, make_subgraph

from helpers.ground_truth import estimator as le
from helpers.ground_truth.records import LatencyStats, ModelSummary

OVERHEAD_MS = {"conv": 0.05, "pool": 0.01, "elementwise": 0.02}  # per subgraph of each operation type
NODE_MS = 0.03  # per fused node beyond the first
MS_PER_BYTE = 1 / 4e6
LOW_RATE, HIGH_RATE = 1 / 2e6, 1 / 5e7  # ms per FLOP at the lowest and highest intensity of the data
INTENSITY = (-1.0, 3.0)  # log10(FLOP/byte) range the synthetic subgraphs span (both ends always present)
SCALE, PER_SUBGRAPH_MS, CALL_OVERHEAD_MS = 1.2, 0.002, 0.05


def ms_per_flop(log_intensity: np.ndarray, kink: bool = False) -> np.ndarray:
    """The law's FLOP cost: linear in log intensity across the data's range, or (``kink``) flat up to the middle and
    falling steeply after it -- a curve one FLOP rate cannot follow."""
    lo, hi = INTENSITY
    fraction = (log_intensity - lo) / (hi - lo)
    if kink:
        return np.where(fraction < 0.5, LOW_RATE, LOW_RATE + (HIGH_RATE - LOW_RATE) * (2 * fraction - 1))
    return LOW_RATE + (HIGH_RATE - LOW_RATE) * fraction


def law_record(model: str, batch: int, rng: np.random.Generator, kink: bool = False, **changes):
    """A record whose subgraphs cost exactly what the law says (their mean is what ``subgraph_sum`` sums), with an
    end-to-end latency calibrated from their sum."""
    count = int(rng.integers(8, 16))
    kinds = rng.choice(sorted(OVERHEAD_MS), size=count)
    nodes = rng.integers(1, 4, size=count)
    nbytes = np.round(batch * 10 ** rng.uniform(3, 5, size=count))
    wanted = rng.uniform(*INTENSITY, size=count)
    wanted[:2] = INTENSITY  # every record spans the whole range: knots at its quantiles fall (nearly) on the ends
    flops = np.round(nbytes * 10**wanted)
    log_intensity = np.log10(flops / nbytes)  # as the estimator sees it, from the integers stored
    cost = (
        np.array([OVERHEAD_MS[k] for k in kinds])
        + NODE_MS * (nodes - 1)
        + MS_PER_BYTE * nbytes
        + ms_per_flop(log_intensity, kink) * flops
    )
    subgraphs = [
        dataclasses.replace(
            make_subgraph(i, [ms, ms], flops=int(f), nbytes=int(b), operation_type=str(k)),
            node_names=[f"/n{i}_{j}" for j in range(n)],
        )
        for i, (k, n, f, b, ms) in enumerate(zip(kinds, nodes, flops, nbytes, cost))
    ]
    total = SCALE * sum(s.measured_latency.mean for s in subgraphs) + PER_SUBGRAPH_MS * count + CALL_OVERHEAD_MS
    summary = ModelSummary.from_subgraphs(subgraphs, batch, LatencyStats.from_samples([total, total * 1.1]))
    return make_record(model=model, batch_size=batch, input_shape=None, subgraphs=subgraphs, model_summary=summary)


def law_records(models: int = 5, seed: int = 0, kink: bool = False) -> list:
    rng = np.random.default_rng(seed)
    return [law_record(f"m{i}", b, rng, kink) for i in range(models) for b in (1, 4)]


def test_fit_recovers_the_cost_law_and_the_end_to_end_calibration():
    records = law_records()
    estimator = le.LatencyEstimator.fit(records, "end_to_end", knots=2)
    group = estimator.groups["onnxruntime/fp32"]
    cost = group.cost
    assert cost.overhead_ms == pytest.approx(OVERHEAD_MS, rel=1e-4)
    assert cost.node_overhead_ms == pytest.approx(NODE_MS, rel=1e-4)
    assert cost.ms_per_byte == pytest.approx(MS_PER_BYTE, rel=1e-4)
    assert cost.knots == pytest.approx(INTENSITY, abs=2e-3)  # the outer quantiles of the stored intensities
    assert cost.ms_per_flop == pytest.approx(ms_per_flop(np.array(cost.knots)).tolist(), rel=1e-4)
    assert (group.scale, group.per_subgraph_ms, group.call_overhead_ms) == pytest.approx(
        (SCALE, PER_SUBGRAPH_MS, CALL_OVERHEAD_MS), rel=1e-3
    )
    assert group.knots_chosen_by == "given"
    fresh = law_record("unseen", 2, np.random.default_rng(9))
    assert estimator.predict(fresh) == pytest.approx(fresh.model_summary.end_to_end_latency.min, rel=1e-4)
    described = group.to_dict()
    assert described["efficiency_curve"]["peak_fraction"] == pytest.approx(
        (1e3 / (ms_per_flop(np.array(cost.knots)) * PEAK)).tolist(), rel=1e-4
    )
    assert described["bandwidth_bytes_per_ms"] == pytest.approx(4e6, rel=1e-4)


def test_the_curve_is_flat_beyond_its_outer_knots():
    cost = le.LatencyEstimator.fit(law_records(), "subgraph_sum", knots=2).groups["onnxruntime/fp32"].cost
    flops, nbytes = np.array([1e6, 1e6, 1e9]), np.array([1e9, 1e6, 1e3])  # intensities 1e-3, 1, 1e6
    one = np.ones(3)
    predicted = cost.predict(flops, nbytes, one, np.array(["conv"] * 3, dtype=object))
    rates = (predicted - OVERHEAD_MS["conv"] - MS_PER_BYTE * nbytes) / flops
    assert rates == pytest.approx([LOW_RATE, ms_per_flop(np.array(0.0)), HIGH_RATE], rel=1e-3)


def test_an_operation_type_it_never_saw_costs_the_shared_overhead():
    cost = le.LatencyEstimator.fit(law_records(), "subgraph_sum", knots=2).groups["onnxruntime/fp32"].cost
    unseen = cost.predict(np.zeros(1), np.zeros(1), np.ones(1), np.array(["gather"], dtype=object))
    assert unseen[0] == pytest.approx(np.median(list(OVERHEAD_MS.values())), rel=1e-3)


def test_the_knots_are_chosen_by_leave_one_model_out_within_the_training_records():
    kinked = le.LatencyEstimator.fit(law_records(6, kink=True), "subgraph_sum").groups["onnxruntime/fp32"]
    assert "leave-one-model-out over 6 training models" in kinked.knots_chosen_by
    assert len(kinked.cost.knots) > 2, "a kinked curve needs a knot inside the range"
    few = le.LatencyEstimator.fit(law_records(2, kink=True), "subgraph_sum").groups["onnxruntime/fp32"]
    assert len(few.cost.knots) == 1 and few.knots_chosen_by.startswith("default: 2 model(s)")
    validation = le.leave_one_model_out(law_records(6, kink=True), "subgraph_sum")
    assert validation["ape_pct"].max() < 2.0, validation


def test_a_held_out_record_never_reaches_the_fit_nor_its_choices():
    """Multiplying one model's latencies tenfold changes nothing predicted for it when it is held out, and changes
    what is predicted for the others (it is part of their fit, knot choice included)."""
    records = law_records(5, kink=True)
    slowed = [_slowed(r, 10) if r.model == "m2" else r for r in records]
    for held_out in ("model", "batch_size"):
        before = le.leave_one_out(records, held_out, "subgraph_sum").set_index(["model", "batch_size"])
        after = le.leave_one_out(slowed, held_out, "subgraph_sum").set_index(["model", "batch_size"])
        if held_out == "model":
            assert after.loc["m2", "predicted_ms"].tolist() == before.loc["m2", "predicted_ms"].tolist()
            assert after.loc["m2", "measured_ms"].tolist() == pytest.approx(
                (10 * before.loc["m2", "measured_ms"]).tolist()
            )
        others = after.drop(index="m2", level="model")["predicted_ms"]
        assert not np.allclose(others, before.drop(index="m2", level="model")["predicted_ms"])


def _slowed(record, factor: float):
    """``record`` with every latency ``factor`` times as long."""

    def times(stats: LatencyStats) -> LatencyStats:
        return LatencyStats.from_samples([stats.min * factor, stats.max * factor])

    subgraphs = [dataclasses.replace(s, measured_latency=times(s.measured_latency)) for s in record.subgraphs]
    end_to_end = times(record.model_summary.end_to_end_latency)
    summary = ModelSummary.from_subgraphs(subgraphs, record.batch_size, end_to_end)
    return dataclasses.replace(record, subgraphs=subgraphs, model_summary=summary)


@pytest.mark.parametrize(("speedup", "rule"), [(1.0, "same"), (2.0, "peak")])
def test_the_precision_transfer_rule_is_the_one_the_fitted_precisions_follow(speedup, rule):
    """fp16 at twice the theoretical peak: emulated (its FLOPs cost what fp32's do) or native (half). The rule is
    fitted from the precisions it sees, and a left-out precision is then predicted by it."""
    fp32 = law_records(4)
    fp16 = [_at_precision(r, "fp16", 2 * PEAK, speedup) for r in fp32]
    fp8 = [_at_precision(r, "int8", 4 * PEAK, speedup**2) for r in fp32]
    estimator = le.LatencyEstimator.fit(fp32 + fp16, "subgraph_sum", knots=2)
    assert estimator.transfer_rules["onnxruntime"][0] == rule
    validation = le.leave_one_out(fp32 + fp16 + fp8, "precision", "subgraph_sum")
    held = validation[validation["precision"] == "int8"]
    assert len(held) == len(fp8) and held["ape_pct"].max() < 1.0, held


def _at_precision(record, precision: str, peak: float, speedup: float):
    """``record`` measured at ``precision`` whose FLOPs run ``speedup`` times as fast (the rest costs the same)."""
    subgraphs = []
    for s in record.subgraphs:
        log_intensity = np.log10(s.flops / s.total_bytes)
        saved = ms_per_flop(np.array(log_intensity)) * s.flops * (1 - 1 / speedup)
        ms = s.measured_latency.mean - float(saved)
        subgraphs.append(dataclasses.replace(s, measured_latency=LatencyStats.from_samples([ms, ms])))
    summary = ModelSummary.from_subgraphs(subgraphs, record.batch_size, record.model_summary.end_to_end_latency)
    return dataclasses.replace(
        record, precision=precision, theoretical_peak_flops=peak, subgraphs=subgraphs, model_summary=summary
    )
