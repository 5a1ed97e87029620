"""The across-machines protocol on synthetic machines that follow one cost law: a machine that differs by a known
scale is recovered from k calibration records, one whose FLOPs follow its peak from its peak alone, and no
latency of the target machine but its calibration records' reaches a prediction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from test_ground_truth import PEAK
from test_subgraph_cost import MS_PER_BYTE, _slowed, law_records, ms_per_flop

from helpers.cli.ground_truth import main as cli_main
from helpers.ground_truth import across_machines as am
from helpers.ground_truth.migration import pack, unpack
from helpers.ground_truth.records import LatencyStats, ModelSummary
from helpers.ground_truth.store import GroundTruthLoader, save_measurement
from helpers.ground_truth.validation import Machines, every_protocol
from helpers.run.project import project_root


def machine(records, hardware_id: str) -> list:
    return [dataclasses.replace(r, hardware_id=hardware_id) for r in records]


def without_end_to_end(records) -> list:
    """The records as another tool's files hold them: subgraph means only (target ``subgraph_sum``)."""
    return [
        dataclasses.replace(r, model_summary=ModelSummary.from_subgraphs(r.subgraphs, r.batch_size, None))
        for r in records
    ]


def at_peak(record, factor: float):
    """``record`` on a machine of ``factor`` times the peak whose FLOPs run ``factor`` times as fast."""
    subgraphs = []
    for s in record.subgraphs:
        saved = float(ms_per_flop(np.array(np.log10(s.flops / s.total_bytes)))) * s.flops * (1 - 1 / factor)
        ms = s.measured_latency.mean - saved
        subgraphs.append(dataclasses.replace(s, measured_latency=LatencyStats.from_samples([ms, ms])))
    summary = ModelSummary.from_subgraphs(subgraphs, record.batch_size, None)
    return dataclasses.replace(record, theoretical_peak_flops=factor * PEAK, subgraphs=subgraphs, model_summary=summary)


def half_bandwidth_and_gemm(record):
    """``record`` on a machine of the same theoretical peak whose bytes and FLOPs take twice as long."""
    subgraphs = []
    for s in record.subgraphs:
        flop_ms = float(ms_per_flop(np.array(np.log10(s.flops / s.total_bytes)))) * s.flops
        ms = s.measured_latency.mean + MS_PER_BYTE * s.total_bytes + flop_ms
        subgraphs.append(dataclasses.replace(s, measured_latency=LatencyStats.from_samples([ms, ms])))
    summary = ModelSummary.from_subgraphs(subgraphs, record.batch_size, None)
    return dataclasses.replace(record, subgraphs=subgraphs, model_summary=summary)


@pytest.fixture(scope="module")
def law():
    return law_records(10)  # 20 records: 10 calibrate, 10 are predicted


def test_a_machine_three_times_slower_is_recovered_from_ten_calibration_records(law):
    machines = {"a": machine(law, "a"), "b": machine([_slowed(r, 3) for r in law], "b")}
    calibrated = am.across_machines(machines, "b", calibration=10, draws=3)
    assert len(calibrated) == 3 * 10 and set(calibrated["source"]) == {"a:onnxruntime/fp32"}
    assert calibrated["ape_pct"].max() < 2.0, calibrated
    peaks_only = am.across_machines(machines, "b", calibration=0)
    assert len(peaks_only) == 20 and peaks_only["ape_pct"].median() == pytest.approx(100 * 2 / 3, abs=2.0)


def test_a_machine_whose_flops_follow_its_peak_is_predicted_from_the_peak_alone(law):
    source = without_end_to_end(law)
    machines = {"a": machine(source, "a"), "b": machine([at_peak(r, 2.0) for r in source], "b")}
    validation = am.across_machines(machines, "b", calibration=0)
    assert len(validation) == 20 and validation["ape_pct"].max() < 2.0, validation
    naive_is_off = validation["naive_ape_pct"].median()
    assert naive_is_off > 20, validation


def test_measured_gemm_and_bandwidth_move_a_source_to_a_machine_of_the_same_theoretical_peak(law):
    """Machine b has a's theoretical peak but half its measured GEMM rate and bandwidth: from the peaks in the
    machines' profiles the FLOP and byte parts are moved; without them (theoretical peaks only) they are not."""
    source = without_end_to_end(law)
    machines = {"a": machine(source, "a"), "b": machine([half_bandwidth_and_gemm(r) for r in source], "b")}
    peaks = {"a": am.MeasuredPeaks(0.5 * PEAK, 2e10, PEAK), "b": am.MeasuredPeaks(0.25 * PEAK, 1e10, PEAK)}
    assert peaks["a"].factors(peaks["b"]) == (2.0, 2.0) and peaks["a"].factors(am.MeasuredPeaks()) == (1.0, 1.0)
    measured = am.across_machines(machines, "b", calibration=0, peaks=peaks)
    assert measured["ape_pct"].max() < 2.0, measured
    theoretical = am.across_machines(machines, "b", calibration=0)
    assert theoretical["ape_pct"].median() > 20, theoretical


def test_no_latency_of_the_target_but_its_calibration_records_reaches_a_prediction(law):
    """Multiplying the predicted records' latencies tenfold changes no prediction; changing one calibration record
    changes them (it is used)."""
    machines = {"a": machine(law, "a"), "b": machine([_slowed(r, 3) for r in law], "b")}
    before = am.across_machines(machines, "b", calibration=10, draws=1).set_index(["model", "batch_size"])
    predicted = set(before.index)
    changed = [_slowed(r, 10) if (r.model, r.batch_size) in predicted else r for r in machines["b"]]
    after = am.across_machines({**machines, "b": changed}, "b", calibration=10, draws=1)
    after = after.set_index(["model", "batch_size"]).loc[before.index]
    assert after["predicted_ms"].tolist() == before["predicted_ms"].tolist()
    assert after["roofline_ms"].tolist() == before["roofline_ms"].tolist()
    assert after["measured_ms"].tolist() == pytest.approx((10 * before["measured_ms"]).tolist())
    one = next(r for r in machines["b"] if (r.model, r.batch_size) not in predicted)
    moved = [_slowed(r, 2) if r is one else r for r in machines["b"]]
    again = am.across_machines({**machines, "b": moved}, "b", calibration=10, draws=1)
    assert not np.allclose(
        again.set_index(["model", "batch_size"]).loc[before.index, "predicted_ms"], before["predicted_ms"]
    )


def test_every_machine_is_predicted_from_the_others_and_summarised_like_the_other_protocols(law):
    machines = Machines({"a": machine(law, "a"), "b": machine([_slowed(r, 3) for r in law], "b")})
    summary, table, notes = every_protocol(machines)
    across = summary[summary["held_out"].str.startswith("machine")]
    assert set(zip(across["held_out"], across["hardware_id"])) == {
        (f"machine, k={k}", h) for k in (0, am.CALIBRATION_RECORDS) for h in "ab"
    }
    assert (across.loc[across["held_out"] == "machine, k=10", "median_ape_pct"] < 2.0).all(), across
    assert set(summary["held_out"]) == {"model", "batch_size", "machine, k=0", "machine, k=10"}
    assert notes == ["a: one precision only, nothing to leave out", "b: one precision only, nothing to leave out"]
    alone = every_protocol(Machines({"a": machines.records["a"]}))[2]
    assert alone[-1].startswith("a: the only machine, nothing to predict it from")


def test_the_choice_of_source_without_calibration_and_the_errors():
    law = law_records(3)
    sources = am.fit_sources({"a": machine(law, "a")})
    assert am.nearest_source(sources, "torch", "fp32", PEAK).label == "a:onnxruntime/fp32"  # same precision
    with pytest.raises(ValueError, match="another machine"):
        am.across_machines({"a": machine(law, "a")}, "a")
    with pytest.raises(ValueError, match="no records of 'c'"):
        am.across_machines({"a": machine(law, "a")}, "c")


def test_the_committed_machine_unpacks_into_a_store_the_loader_reads(tmp_path):
    archive = project_root() / "data" / "ground_truth" / "amd-epyc-2c.tar.xz"
    assert archive.stat().st_size < 2_000_000
    loader = unpack(archive, tmp_path)
    records = loader.load_all("amd-epyc-2c")
    assert len(records) == 126 and loader.manifest_status == {"amd-epyc-2c": []}
    assert {(r.runtime, r.precision) for r in records} == {
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("torch", "fp32"),
        ("torch", "bf16"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("openvino", "int8"),
    }
    assert loader.load_hardware_profile("amd-epyc-2c").measured_gemm_flops > 0


def test_a_store_packs_into_an_archive_that_unpacks_to_the_same_records(law, tmp_path):
    for record in machine(law, "packed-cpu"):
        save_measurement(record, tmp_path / "store", update_manifest=False)
    archive = pack(tmp_path / "store", "packed-cpu", tmp_path / "packed.tar.xz")
    loader = unpack(archive, tmp_path / "unpacked")
    assert loader.load_all("packed-cpu") == GroundTruthLoader(tmp_path / "store").load_all("packed-cpu")
    with pytest.raises(FileNotFoundError, match="calib ground-truth pack"):
        unpack(tmp_path / "missing.tar.xz", tmp_path)


def test_validate_with_a_second_store_predicts_each_machine_from_the_other(law, tmp_path, capsys):
    for name, records in (("a", machine(law, "a")), ("b", machine([_slowed(r, 3) for r in law], "b"))):
        for record in records:
            save_measurement(record, tmp_path / name, update_manifest=False)
    csv = tmp_path / "validation.csv"
    args = ["validate", "--store", str(tmp_path / "a"), "--with-store", str(tmp_path / "b"), "--csv", str(csv)]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert f"with store: {tmp_path / 'b'}" in out and "across machines (held_out machine, k=K)" in out
    validation = pd.read_csv(csv)
    assert validation.groupby(["held_out", "hardware_id"]).size().to_dict() == {
        **{("model", h): 20 for h in "ab"},
        **{("batch_size", h): 20 for h in "ab"},
        **{("machine, k=0", h): 20 for h in "ab"},
        **{("machine, k=10", h): 20 * 10 for h in "ab"},
    }
    same = ["validate", "--store", str(tmp_path / "a"), "--with-store", str(tmp_path / "a")]
    assert cli_main(same) == 2
    assert "a is in two stores" in capsys.readouterr().err
