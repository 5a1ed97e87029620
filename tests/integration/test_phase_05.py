"""Phase 05 through the real CLI: the run's own FP32 and INT8 models measured into a ground-truth store, on every
runtime x precision this machine runs (helpers.runtime).

Phase 05 holds timings, so its results are not byte-deterministic: nothing here compares two runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import runtime
from helpers.ground_truth.records import SCHEMA_VERSION
from helpers.ground_truth.store import GroundTruthLoader

BATCH_SIZES = (1, 32)  # the notebook's default
MEASURED = sorted((r, p) for p in runtime.PRECISIONS for r in runtime.available(p))  # (runtime, precision)


@pytest.fixture(scope="module")
def latency_run(default_run) -> tuple[Path, Path]:
    return default_run, default_run.parent.parent / "store"


def results(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / "results" / "05_latency" / name).read_text())


def test_store_holds_v2_records_of_the_runs_models(latency_run):
    run_dir, store = latency_run
    summary = json.loads((run_dir / "manifests" / "05_latency.json").read_text())["summary"]
    spec = json.loads((run_dir / "results" / "02_train" / "model.json").read_text())
    quant_report = json.loads((run_dir / "results" / "04_quantize" / "quant_report.json").read_text())
    assert summary["int8_variant"] == quant_report["best_variant"]
    loader = GroundTruthLoader(store)
    assert loader.list_hardware() == [summary["hardware_id"]]
    assert loader.list_configurations(summary["hardware_id"]) == sorted(
        (summary["model"], r, p, b) for r, p in MEASURED for b in BATCH_SIZES
    )
    for name, precision in MEASURED:
        for batch in BATCH_SIZES:
            record = loader.load(summary["hardware_id"], summary["model"], precision, batch, runtime=name)
            assert record.schema_version == SCHEMA_VERSION and record.batch_size == batch and record.runtime == name
            assert record.input_shape == [batch, *spec["input_shape"]]
            assert record.model_summary.end_to_end_latency.samples == 20
            integer = "QLinear" if name == "onnxruntime" else "_I8"  # the fused QDQ kernels each runtime reports
            quantized = any(integer in s.fusion_pattern for s in record.subgraphs if s.operation_type == "conv")
            assert quantized == (precision == "int8"), [s.fusion_pattern for s in record.subgraphs]
    assert loader.check_manifest(summary["hardware_id"]) == []
    listed = json.loads((store / summary["hardware_id"] / "manifest.json").read_text())["measurements"]
    assert sorted((e["model"], e["runtime"], e["precision"], e["batch_size"]) for e in listed) == sorted(
        (summary["model"], r, p, b) for r, p in MEASURED for b in BATCH_SIZES
    )


def test_latency_json_agrees_with_the_store(latency_run):
    run_dir, store = latency_run
    report = results(run_dir, "latency.json")
    loader = GroundTruthLoader(store)
    assert sorted((row["runtime"], row["precision"], row["batch_size"]) for row in report["measurements"]) == sorted(
        (r, p, b) for r, p in MEASURED for b in BATCH_SIZES
    )
    for row in report["measurements"]:
        where = (report["hardware_id"], row["model"], row["precision"], row["batch_size"], row["runtime"])
        record = loader.load(*where)
        assert store / row["file"] == loader.path(*where)
        assert record.run_id == report["run_id"]
        assert row["end_to_end_latency_ms"] == record.model_summary.end_to_end_latency.to_dict()
        assert row["num_subgraphs"] == record.model_summary.num_subgraphs
        assert row["throughput_fps"] == record.model_summary.throughput_fps
    both = {r for r, p in MEASURED if p == "int8"} & {r for r, p in MEASURED if p == "fp32"}
    assert set(report["int8_over_fp32"]) == {f"{report['model']}/{r}/b{b}" for r in both for b in BATCH_SIZES}


def test_peaks_json_puts_every_measurement_against_its_precisions_peak(latency_run):
    run_dir, _ = latency_run
    peaks = results(run_dir, "peaks.json")
    assert set(peaks["peaks"]) == set(runtime.PRECISIONS) - ({"bf16"} if not runtime.available("bf16") else set())
    assert all(p["flops_per_s"] > 0 for p in peaks["peaks"].values())
    rows = peaks["measurements"]
    assert sorted((r["runtime"], r["precision"], r["batch_size"]) for r in rows) == sorted(
        (r, p, b) for r, p in MEASURED for b in BATCH_SIZES
    )
    assert all(r["fraction_of_measured_peak"] > 0 and r["roofline_predicted_ms"] > 0 for r in rows)


def test_estimator_json_says_lomo_needs_more_models(latency_run):
    run_dir, _ = latency_run
    estimator = results(run_dir, "estimator.json")
    assert estimator["models"] == [results(run_dir, "latency.json")["model"]]
    assert set(estimator["groups"]) == {f"{r}/{p}" for r, p in MEASURED}
    assert not estimator["lomo"]["available"] and "calib ground-truth measure" in estimator["lomo"]["reason"]
    assert (run_dir / "results" / "05_latency" / "latency.png").stat().st_size > 0
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["phases"]["05_latency"]["status"] == "complete"


def test_the_run_keeps_what_it_stored_and_the_store_holds_it(latency_run):
    """Phase 05 stages its records among its results (listed in its manifest); the runner stores them once the
    phase's manifest is in place (issue 29, item 5): the store holds exactly those bytes."""
    run_dir, store = latency_run
    staged = run_dir / "results" / "05_latency" / "store"
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    assert any(p.suffix == ".npz" for p in files) and any(p.name == "hardware.json" for p in files)
    assert all((store / p.relative_to(staged)).read_bytes() == p.read_bytes() for p in files)
    listed = json.loads((run_dir / "manifests" / "05_latency.json").read_text())["files"]
    assert {f"store/{p.relative_to(staged).as_posix()}" for p in files} <= set(listed)
