"""Phase 05 through the real CLI: the run's own FP32 and INT8 models measured into a ground-truth store.

Phase 05 holds timings, so its results are not byte-deterministic: nothing here compares two runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.ground_truth.records import SCHEMA_VERSION
from helpers.ground_truth.store import GroundTruthLoader

BATCH_SIZES = (1, 32)  # the notebook's default
PRECISIONS = ("fp32", "int8")


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
        (summary["model"], "onnxruntime", p, b) for p in PRECISIONS for b in BATCH_SIZES)
    for precision in PRECISIONS:
        for batch in BATCH_SIZES:
            record = loader.load(summary["hardware_id"], summary["model"], precision, batch)
            assert record.schema_version == SCHEMA_VERSION and record.batch_size == batch
            assert record.input_shape == [batch, *spec["input_shape"]]
            assert record.model_summary.end_to_end_latency.samples == 20
            quantized = any(s.fusion_pattern.startswith("QLinear") for s in record.subgraphs)
            assert quantized == (precision == "int8"), [s.fusion_pattern for s in record.subgraphs]
    assert loader.check_manifest(summary["hardware_id"]) == []
    listed = json.loads((store / summary["hardware_id"] / "manifest.json").read_text())["measurements"]
    assert sorted((e["model"], e["precision"], e["batch_size"]) for e in listed) == sorted(
        (summary["model"], p, b) for p in PRECISIONS for b in BATCH_SIZES)


def test_latency_json_agrees_with_the_store(latency_run):
    run_dir, store = latency_run
    report = results(run_dir, "latency.json")
    loader = GroundTruthLoader(store)
    assert sorted((row["precision"], row["batch_size"]) for row in report["measurements"]) == sorted(
        (p, b) for p in PRECISIONS for b in BATCH_SIZES)
    for row in report["measurements"]:
        record = loader.load(report["hardware_id"], row["model"], row["precision"], row["batch_size"])
        assert store / row["file"] == loader.path(report["hardware_id"], row["model"], row["precision"],
                                                   row["batch_size"])
        assert record.run_id == report["run_id"]
        assert row["end_to_end_latency_ms"] == record.model_summary.end_to_end_latency.to_dict()
        assert row["num_subgraphs"] == record.model_summary.num_subgraphs
        assert row["throughput_fps"] == record.model_summary.throughput_fps
    assert set(report["int8_over_fp32"]) == {f"{report['model']}/onnxruntime/b{b}" for b in BATCH_SIZES}


def test_estimator_json_says_lomo_needs_more_models(latency_run):
    run_dir, _ = latency_run
    estimator = results(run_dir, "estimator.json")
    assert estimator["models"] == [results(run_dir, "latency.json")["model"]]
    assert set(estimator["groups"]) == {"onnxruntime/fp32", "onnxruntime/int8"}
    assert not estimator["lomo"]["available"] and "calib ground-truth measure" in estimator["lomo"]["reason"]
    assert (run_dir / "results" / "05_latency" / "latency.png").stat().st_size > 0
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["phases"]["05_latency"]["status"] == "complete"
