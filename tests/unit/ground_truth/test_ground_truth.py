"""The v2.0 ground-truth schema: statistics, round trips, validation errors naming file and field."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from scipy import stats

from helpers.ground_truth.records import (
    PRECISIONS,
    EfficiencyStats,
    LatencyStats,
    MeasurementRecord,
    ModelSummary,
    SchemaError,
    SubgraphMeasurement,
    SystemState,
)
from helpers.run import run_record

PEAK = 1e11


def make_subgraph(
    index: int, samples_ms, flops: int = 2_000_000, nbytes: int = 40_000, operation_type: str = "conv"
) -> SubgraphMeasurement:
    return SubgraphMeasurement.from_samples(
        subgraph_id=f"{index:03d}",
        fusion_pattern="FusedConv+Relu",
        operation_type=operation_type,
        flops=flops,
        total_bytes=nbytes,
        theoretical_peak_flops=PEAK,
        latency_ms=samples_ms,
        node_names=[f"/conv{index}"],
        source_model="tiny",
    )


def make_record(**changes) -> MeasurementRecord:
    rng = np.random.default_rng(0)
    subgraphs = [make_subgraph(i, 0.05 + 0.01 * rng.random(8)) for i in range(3)]
    end_to_end = LatencyStats.from_samples(0.2 + 0.02 * rng.random(8))
    fields = dict(
        schema_version="2.0",
        measurement_type="efficiency",
        model="tiny",
        hardware_id="test-cpu-2c",
        device="Test CPU",
        precision="fp32",
        thermal_profile="unknown",
        theoretical_peak_flops=PEAK,
        measurement_date="2024-05-01T12:00:00+00:00",
        tool_version="calib-lab test",
        subgraphs=subgraphs,
        batch_size=4,
        input_shape=[4, 8, 8, 1],
        model_summary=ModelSummary.from_subgraphs(subgraphs, 4, end_to_end),
        system_state=SystemState(cpu_freq_mhz=2400.0),
        run_id=str(uuid.UUID(int=7)),
        run_index=0,
    )
    return MeasurementRecord(**{**fields, **changes})


def test_latency_stats_match_scipy_t_interval_and_numpy_percentiles():
    samples = np.random.default_rng(1).gamma(4.0, 0.5, size=40)
    latency = LatencyStats.from_samples(samples)
    low, high = stats.t.interval(0.95, len(samples) - 1, loc=samples.mean(), scale=stats.sem(samples))
    assert latency.ci_lower == pytest.approx(low) and latency.ci_upper == pytest.approx(high)
    assert latency.std == pytest.approx(np.std(samples, ddof=1))
    assert (latency.min, latency.max, latency.samples) == (samples.min(), samples.max(), 40)
    assert latency.p90 == pytest.approx(np.quantile(samples, 0.9))
    assert latency.cv == pytest.approx(latency.std / latency.mean)


def test_a_single_sample_has_zero_spread():
    latency = LatencyStats.from_samples([2.5])
    assert (latency.std, latency.ci_lower, latency.ci_upper) == (0.0, 2.5, 2.5)


@pytest.mark.parametrize("bad", [[], [1.0, np.nan], [[1.0, 2.0]]])
def test_stats_reject_empty_nan_or_2d_samples(bad):
    with pytest.raises(ValueError, match="latency samples"):
        LatencyStats.from_samples(bad)


def test_subgraph_efficiency_is_achieved_over_peak_per_sample():
    samples = np.array([0.02, 0.04])  # ms
    sub = make_subgraph(0, samples, flops=4_000_000, nbytes=1_000_000)
    per_sample = 4_000_000 / (samples / 1e3) / PEAK
    assert sub.efficiency.mean == pytest.approx(per_sample.mean())
    assert sub.achieved_flops == pytest.approx(4_000_000 / (samples.mean() / 1e3))
    assert sub.arithmetic_intensity == pytest.approx(4.0)
    with pytest.raises(ValueError, match="must be > 0 ms"):
        make_subgraph(0, [0.0, 0.01])


def test_model_summary_totals_and_throughput():
    subs = [make_subgraph(0, [1.0, 1.2]), make_subgraph(1, [2.0, 2.0], flops=10, nbytes=20)]
    end_to_end = LatencyStats.from_samples([4.0, 4.0])
    summary = ModelSummary.from_subgraphs(subs, batch_size=8, end_to_end_latency=end_to_end)
    assert summary.total_flops == 2_000_010 and summary.total_bytes == 40_020
    assert summary.total_latency_ms == pytest.approx(3.1)
    assert summary.total_latency_std_ms == pytest.approx(np.std([1.0, 1.2], ddof=1))
    assert summary.throughput_fps == pytest.approx(8 / 4.0e-3)  # per end-to-end call, not the subgraph sum
    assert ModelSummary.from_subgraphs(subs, 8).throughput_fps == pytest.approx(8 / 3.1e-3)


@pytest.mark.parametrize(
    "obj",
    [
        LatencyStats.from_samples([1.0, 2.0, 4.0]),
        EfficiencyStats.from_samples([0.1, 0.3]),
        make_subgraph(2, [0.5, 0.7, 0.6]),
        ModelSummary.from_subgraphs([make_subgraph(0, [1.0, 2.0])], 2, LatencyStats.from_samples([3.0, 3.5])),
        SystemState(cpu_freq_mhz=2600.0, cpu_governor="performance"),
        SystemState(),
        make_record(),
        make_record(system_state=None, input_shape=None, runtime="torch"),
    ],
    ids=lambda o: type(o).__name__,
)
def test_every_dataclass_round_trips_through_json(obj):
    again = type(obj).from_dict(json.loads(json.dumps(obj.to_dict())))
    assert again == obj


def test_record_save_load_is_byte_stable(tmp_path):
    record = make_record()
    path = record.save(tmp_path / "r.json")
    loaded = MeasurementRecord.load(path)
    assert loaded == record
    first = path.read_bytes()
    loaded.save(path)
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_record_key_separates_runtimes():
    assert make_record().key == "tiny"
    assert make_record(runtime="torch").key == "tiny-torch"


def test_broken_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"schema_version": "2.0", "model": ')
    with pytest.raises(ValueError, match=r"broken\.json.*not valid JSON \(line 1"):
        MeasurementRecord.load(path)


def test_wrong_field_type_names_file_and_field_path(tmp_path):
    data = make_record().to_dict()
    data["subgraphs"][1]["measured_latency"]["mean"] = "fast"
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError, match=r"typed\.json.*'subgraphs\[1\]\.measured_latency\.mean'.*finite number"):
        MeasurementRecord.load(path)


def test_missing_v2_fields_are_all_named(tmp_path):
    data = make_record().to_dict()
    for name in ("batch_size", "run_id", "model_summary"):
        del data[name]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError) as info:
        MeasurementRecord.load(path)
    message = str(info.value)
    assert "partial.json" in message and "are missing" in message
    assert all(name in message for name in ("batch_size", "run_id", "model_summary"))


def test_unknown_precision_lists_the_valid_ones():
    data = make_record().to_dict() | {"precision": "fp8"}
    with pytest.raises(SchemaError, match="fp8") as info:
        MeasurementRecord.from_dict(data)
    assert all(p in str(info.value) for p in PRECISIONS)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"measurement_date": "2024-05-01 noon"}, "measurement_date"),
        ({"run_id": "run-1"}, "run_id"),
        ({"batch_size": 0}, "batch_size"),
        ({"input_shape": [2, 8, 8, 1]}, "input_shape"),  # disagrees with batch_size 4
        ({"schema_version": "1.0"}, "schema_version"),
        ({"runtime": "tvm"}, "runtime"),
        ({"batch_size": True}, "batch_size"),
    ],
)
def test_invalid_values_name_their_field(change, field):
    with pytest.raises(SchemaError, match=f"'{field}'"):
        MeasurementRecord.from_dict(make_record().to_dict() | change)


def test_a_naive_date_is_kept_as_written_and_flagged_zone_unknown():
    record = MeasurementRecord.from_dict(make_record().to_dict() | {"measurement_date": "2026-02-07T14:16:29.841719"})
    assert record.measurement_date == "2026-02-07T14:16:29.841719" and not record.date_zone_known
    assert make_record().date_zone_known


def test_zero_flop_subgraphs_may_have_no_efficiency_samples_but_latency_needs_samples():
    sub = make_record().subgraphs[0].to_dict()
    empty = {"mean": 0, "std": 0, "min": 0, "max": 0, "ci_lower": 0, "ci_upper": 0, "samples": 0}
    assert SubgraphMeasurement.from_dict(sub | {"flops": 0, "efficiency": empty}).efficiency.samples == 0
    with pytest.raises(SchemaError, match="'measured_latency.samples' must be >= 1"):
        SubgraphMeasurement.from_dict(sub | {"measured_latency": empty})


def test_null_only_where_optional():
    data = make_record().to_dict()
    assert MeasurementRecord.from_dict(data | {"system_state": None}).system_state is None
    with pytest.raises(SchemaError, match="'model_summary' is null"):
        MeasurementRecord.from_dict(data | {"model_summary": None})


def test_utc_now_is_tz_aware_iso():
    from datetime import datetime

    assert datetime.fromisoformat(run_record.now()).utcoffset() is not None
