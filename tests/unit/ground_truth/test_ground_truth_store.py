"""The ground-truth store: layout, v1.0 compatibility, batch names, manifest, loader, migration, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_ground_truth import make_record

from helpers.cli.ground_truth import main as cli_main
from helpers.ground_truth import layout, migration, store
from helpers.ground_truth.layout import split_batch_suffix
from helpers.ground_truth.migration import migrate
from helpers.ground_truth.records import MeasurementRecord, SchemaError
from helpers.ground_truth.store import GroundTruthLoader, read_measurement
from helpers.run.project import project_root

HW = "test-cpu-2c"
V2_ONLY = ("batch_size", "input_shape", "model_summary", "system_state", "run_id", "run_index", "runtime")


def v1_document(model: str, date: str = "2023-03-01T08:00:00+00:00", precision: str = "fp32") -> dict:
    """A record as the v1.0 tool wrote it: no v2.0 fields, latency stats without percentiles."""
    data = make_record(model=model, precision=precision, measurement_date=date).to_dict()
    for name in V2_ONLY:
        data.pop(name)
    for sub in data["subgraphs"]:
        sub["source_model"] = model
        for name in ("p50", "p90", "p99"):
            sub["measured_latency"].pop(name)
    return data | {"schema_version": "1.0", "tool_version": "calib-lab 0.1.0; onnxruntime 1.17.0"}


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "stem, model, batch",
    [
        ("efficientnet_b0", "efficientnet_b0", None),
        ("efficientnet_b1_b4", "efficientnet_b1", 4),
        ("resnet_b16", "resnet", 16),
        ("resnet_b16", "resnet_b16", None),
        ("resnet_b16_b1", "resnet_b16", 1),
        ("mobilenet_b2_b32", "mobilenet_b2", 32),
        ("mobilenet_b2_b32", "mobilenet_b2_b32", None),
        ("resnet8-torch_b8", "resnet8-torch", 8),
    ],
)
def test_batch_suffix_is_read_against_the_model_name(stem, model, batch):
    assert split_batch_suffix(stem, model) == batch


@pytest.mark.parametrize(
    "stem, model",
    [("mobilenet_b2_b32", "mobilenet"), ("resnet_b0", "resnet"), ("resnet_b16x", "resnet"), ("resnet8", "resnet20")],
)
def test_a_name_that_does_not_match_its_model_is_an_error(stem, model):
    with pytest.raises(ValueError, match="does not match its model"):
        split_batch_suffix(stem, model)


@pytest.mark.parametrize(
    "relative, model, batch",
    [
        ("hw/fp32/measurements/efficientnet_b0.json", "efficientnet_b0", 1),  # legacy per-model layout
        ("hw/fp32/measurements/resnet_b16.json", "resnet_b16", 1),
        ("old/hw/fp32/efficientnet_b1_b4.json", "efficientnet_b1", 4),  # legacy batch layout
        ("old/hw/fp32/mobilenet_b2_b32.json", "mobilenet_b2", 32),
        ("old/hw/fp32/resnet_b16.json", "resnet", 16),
    ],
)
def test_v1_files_upgrade_with_batch_from_the_name(tmp_path, relative, model, batch):
    path = write_json(tmp_path / relative, v1_document(model))
    record = read_measurement(path)
    assert (record.schema_version, record.model, record.batch_size) == ("2.0", model, batch)
    assert record.system_state is None and record.input_shape is None and record.runtime == "onnxruntime"
    assert record.model_summary.end_to_end_latency is None
    assert record.model_summary.num_subgraphs == 3
    assert record.model_summary.total_latency_ms == pytest.approx(
        sum(s.measured_latency.mean for s in record.subgraphs)
    )
    assert read_measurement(path).run_id == record.run_id  # derived, not random: upgrades are reproducible


def test_v1_missing_fields_are_named(tmp_path):
    data = v1_document("m")
    del data["device"], data["subgraphs"]
    with pytest.raises(SchemaError, match=r"old\.json.*'device, subgraphs' are missing"):
        read_measurement(write_json(tmp_path / "old.json", data))


def test_v2_name_must_agree_with_batch_size(tmp_path):
    path = make_record(batch_size=4).save(tmp_path / "tiny_b8.json")
    with pytest.raises(ValueError, match="name says batch 8 but batch_size is 4"):
        read_measurement(path)


def populated_store(root: Path) -> list[MeasurementRecord]:
    records = [
        make_record(model="tiny", batch_size=1, input_shape=[1, 8, 8, 1]),
        make_record(model="tiny", batch_size=4),
        make_record(model="tiny", precision="int8", batch_size=4),
        make_record(model="tiny", runtime="torch", batch_size=4),
        make_record(model="other", batch_size=4),
    ]
    for record in records:
        store.save_measurement(record, root, samples={"end_to_end_ms": np.arange(5.0)}, update_manifest=False)
    store.rebuild_manifest(root, HW)
    return records


def test_layout_and_manifest(tmp_path):
    populated_store(tmp_path)
    hw_dir = tmp_path / HW
    assert (hw_dir / "measurements/fp32/tiny_b1_r00000000.json").is_file()  # named by its run: one file per repeat
    assert (hw_dir / "measurements/fp32/tiny-torch_b4_r00000000.npz").is_file()
    manifest = json.loads((hw_dir / "manifest.json").read_text())
    assert manifest["summary"] == {"num_models": 2, "num_precisions": 2, "num_batch_sizes": 2, "total_measurements": 5}
    assert manifest["coverage"] == {"models": ["other", "tiny"], "precisions": ["fp32", "int8"], "batch_sizes": [1, 4]}
    entry = next(e for e in manifest["measurements"] if e["file"] == "measurements/int8/tiny_b4_r00000000.json")
    assert (entry["model"], entry["precision"], entry["batch_size"], entry["num_subgraphs"]) == ("tiny", "int8", 4, 3)
    assert store.manifest_problems(tmp_path, HW) == []


def test_manifest_disagreement_is_detected_and_rebuild_fixes_it(tmp_path):
    populated_store(tmp_path)
    loader = GroundTruthLoader(tmp_path)
    (tmp_path / HW / "measurements/fp32/other_b4_r00000000.json").unlink()
    make_record(model="new", batch_size=2, input_shape=None).save(tmp_path / HW / "measurements/fp32/new_b2.json")
    problems = loader.check_manifest(HW)
    assert any("other_b4_r00000000.json: listed but no such record file" in p for p in problems)
    assert any("new_b2.json: record file not listed" in p for p in problems)
    with pytest.warns(UserWarning, match="rebuild_manifest"):
        assert "new" in loader.list_models(HW)  # a stale manifest is not trusted
    loader.rebuild_manifest(HW)
    assert loader.check_manifest(HW) == []
    assert loader.list_models(HW) == ["new", "tiny"]


def test_misfiled_record_fails_the_manifest(tmp_path):
    populated_store(tmp_path)
    make_record(model="x", precision="int8").save(tmp_path / HW / "measurements/fp32/x_b4.json")
    with pytest.raises(ValueError, match="misfiled"):
        store.rebuild_manifest(tmp_path, HW)


def test_loader_lists_and_loads(tmp_path):
    records = populated_store(tmp_path)
    loader = GroundTruthLoader(tmp_path)
    assert loader.list_hardware() == [HW]
    assert loader.list_models(HW) == ["other", "tiny"]
    assert loader.list_models(HW, precision="int8") == ["tiny"]
    assert ("tiny", "torch", "fp32", 4) in loader.list_configurations(HW)
    assert loader.load(HW, "tiny", "fp32", 4, runtime="torch") == records[3]
    assert loader.load_model_summary(HW, "tiny", "int8", 4) == records[2].model_summary
    assert len(loader.load_all(HW)) == 5 and len(loader.load_all(HW, precision="int8")) == 1
    np.testing.assert_array_equal(loader.load_samples(HW, "tiny", "fp32", 1)["end_to_end_ms"], np.arange(5.0))


def test_configurations_are_indexable_by_key_and_by_attribute(tmp_path):
    populated_store(tmp_path)
    (first, *_) = GroundTruthLoader(tmp_path).list_configurations(HW)
    assert first["model"] == first.model == first[0] == "other"
    assert dict(first) == {"model": "other", "runtime": "onnxruntime", "precision": "fp32", "batch_size": 4}
    with pytest.raises(KeyError):
        first["date"]


def test_model_summary_comes_from_the_manifest_while_its_stamps_agree_with_the_files(tmp_path):
    """The manifest (format 2) carries each file's size and mtime: while they match, load_model_summary answers
    from it without reading a record -- shown by a record overwritten with same-sized garbage, mtime restored."""
    import os

    records = populated_store(tmp_path)
    manifest = json.loads((tmp_path / HW / "manifest.json").read_text())
    assert manifest["manifest_format_version"] == store.MANIFEST_FORMAT_VERSION
    path = tmp_path / HW / "measurements/int8/tiny_b4_r00000000.json"
    stat = path.stat()
    path.write_bytes(b" " * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert GroundTruthLoader(tmp_path).load_model_summary(HW, "tiny", "int8", 4) == records[2].model_summary

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # changed since the manifest: read the file
    with pytest.raises(ValueError, match="not valid JSON"):
        GroundTruthLoader(tmp_path).load_model_summary(HW, "tiny", "int8", 4)
    summary = dataclasses.replace(records[2].model_summary, throughput_fps=1.0)
    newer = dataclasses.replace(records[2], model_summary=summary)
    newer.save(path)
    assert GroundTruthLoader(tmp_path).load_model_summary(HW, "tiny", "int8", 4) == summary


def test_a_manifest_without_the_format_version_is_not_used_for_summaries(tmp_path):
    populated_store(tmp_path)
    path = tmp_path / HW / "manifest.json"
    path.write_text(
        json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "manifest_format_version"})
    )
    loader = GroundTruthLoader(tmp_path)
    assert loader.manifest_summaries(HW) is None
    assert loader.load_model_summary(HW, "tiny", "int8", 4) == loader.load(HW, "tiny", "int8", 4).model_summary


def test_loader_errors_say_what_was_looked_for_and_what_exists(tmp_path):
    populated_store(tmp_path)
    loader = GroundTruthLoader(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'tiny' \(onnxruntime, fp32, batch 32\).*Measured for 'tiny':.*b1"):
        loader.load(HW, "tiny", "fp32", 32)
    with pytest.raises(FileNotFoundError, match="Models measured: other, tiny"):
        loader.load(HW, "absent", "fp32", 1)
    with pytest.raises(FileNotFoundError, match=f"hardware 'nope'.*hardware measured: {HW}"):
        loader.load("nope", "tiny", "fp32", 1)
    with pytest.raises(SchemaError, match="valid precisions"):
        loader.list_models(HW, precision="fp8")
    assert loader.list_models(HW, precision="INT8") == ["tiny"]  # precision names are case-folded


def test_one_default_store_for_phase_05_the_loader_and_the_cli(tmp_path, monkeypatch, capsys):
    """Phase 05 with an empty store_dir stores where GroundTruthLoader() and `calib ground-truth` read by default:
    calibration_data/ in the runs root (the checkout's runs/, $CALIB_RUNS_ROOT, or --runs-root)."""
    from helpers.ground_truth.runtime_latency import store_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALIB_RUNS_ROOT", raising=False)
    checkout_store = project_root() / "runs" / "calibration_data"
    assert GroundTruthLoader().root == layout.default_data_dir() == checkout_store
    assert store_root("", project_root() / "runs" / "some-run") == checkout_store
    assert repr(GroundTruthLoader()) == f"GroundTruthLoader({str(checkout_store)!r})"

    runs = tmp_path / "elsewhere"
    monkeypatch.setenv("CALIB_RUNS_ROOT", str(runs))
    assert GroundTruthLoader().root == store_root("", runs / "a-run") == runs / "calibration_data"
    assert store_root(str(tmp_path / "mine"), runs / "a-run") == tmp_path / "mine"  # -p store_dir=DIR

    populated_store(runs / "calibration_data")
    assert cli_main(["list"]) == 0
    assert capsys.readouterr().out.startswith(f"store: {runs / 'calibration_data'} (the default")
    other = tmp_path / "other-runs"
    populated_store(other / "calibration_data")
    assert cli_main(["list", "--runs-root", str(other)]) == 0
    assert capsys.readouterr().out.startswith(f"store: {other / 'calibration_data'} (the default")


def legacy_sources(base: Path) -> list[Path]:
    """Two legacy trees holding v1.0 and v2.0 files, an older measurement and a broken file of another machine."""
    a, b = base / "a", base / "b"
    write_json(a / HW / "fp32/measurements/efficientnet_b0.json", v1_document("efficientnet_b0"))
    write_json(a / HW / "int8/measurements/resnet_b16.json", v1_document("resnet_b16", precision="int8"))
    write_json(b / HW / "fp32/efficientnet_b1_b4.json", v1_document("efficientnet_b1"))
    write_json(b / HW / "fp32/mobilenet_b2_b32.json", v1_document("mobilenet_b2", date="2023-01-01T00:00:00+00:00"))
    write_json(a / HW / "fp32/measurements/mobilenet_b2_b32.json", v1_document("mobilenet_b2"))  # newer duplicate
    make_record(model="tiny").save(b / HW / "fp32/tiny_b4.json")
    (b / HW / "fp32/tiny_b4.npz").write_bytes(b"samples")
    (b / "other-hw" / "fp32").mkdir(parents=True)
    (b / "other-hw" / "fp32/broken_b1.json").write_text("{not json")
    return [a, b]


def test_migration_writes_the_canonical_layout(tmp_path):
    sources, dest = legacy_sources(tmp_path), tmp_path / "dest"
    report = migrate(sources, dest)
    assert len(report.of(migration.MIGRATED)) == 6  # the older mobilenet measurement too: a repeat, kept
    (failed,) = report.failed
    assert (Path(failed.source).name, failed.hardware_id) == ("broken_b1.json", "other-hw")
    assert "not valid JSON" in failed.detail  # fails alone: another hardware id
    loader = GroundTruthLoader(dest)
    repeats = loader.repeats(HW, "mobilenet_b2", "fp32", 32)
    assert [r.measurement_date[:10] for r in repeats] == ["2023-01-01", "2023-03-01"]
    assert loader.list_configurations(HW) == [
        ("efficientnet_b0", "onnxruntime", "fp32", 1),
        ("efficientnet_b1", "onnxruntime", "fp32", 4),
        ("mobilenet_b2", "onnxruntime", "fp32", 32),
        ("resnet_b16", "onnxruntime", "int8", 1),
        ("tiny", "onnxruntime", "fp32", 4),
    ]
    assert loader.load(HW, "mobilenet_b2", "fp32", 32).measurement_date == "2023-03-01T08:00:00+00:00"
    assert (dest / HW / "measurements/fp32/tiny_b4_r00000000.npz").read_bytes() == b"samples"
    (resnet,) = (dest / HW / "measurements/int8").glob("resnet_b16_b1_r*.json")
    assert json.loads(resnet.read_text())["schema_version"] == "2.0"
    assert loader.check_manifest(HW) == []


def test_migrating_twice_changes_nothing(tmp_path):
    sources, dest = legacy_sources(tmp_path), tmp_path / "dest"
    migrate(sources, dest)
    before = tree_bytes(dest / HW / "measurements")
    again = migrate(sources, dest)
    assert again.of(migration.MIGRATED) == [] and len(again.of(migration.IN_STORE)) == 6
    assert tree_bytes(dest / HW / "measurements") == before


def test_dry_run_leaves_the_destination_untouched(tmp_path):
    sources, dest = legacy_sources(tmp_path), tmp_path / "dest"
    populated_store(dest)
    before = tree_bytes(dest)
    report = migrate(sources, dest, dry_run=True)
    assert report.dry_run and len(report.of(migration.MIGRATED)) == 5  # the destination already holds tiny fp32 b4
    assert len(report.of(migration.IN_STORE)) == 1
    assert tree_bytes(dest) == before
    migrate(sources, tmp_path / "fresh", dry_run=True)
    assert not (tmp_path / "fresh").exists()


def test_migration_refuses_missing_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        migrate([tmp_path / "nowhere"], tmp_path / "dest")


def test_cli_migrate_dry_run_prints_the_report(tmp_path, capsys):
    sources, dest = legacy_sources(tmp_path), tmp_path / "dest"
    code = cli_main(["migrate", *map(str, sources), "--dest", str(dest), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 1  # one file failed
    assert "would write 6 records" in out and "1 failed" in out and "FAILED" in out and "broken_b1.json" in out
    assert not dest.exists()


def test_migration_never_replaces_a_measurement_in_the_store(tmp_path):
    """A store file under a record's name that holds another measurement stays ("name taken"); an older
    measurement of a configuration the store holds is added beside it, as a repeat."""
    sources, dest = legacy_sources(tmp_path), tmp_path / "dest"
    other = make_record(model="tiny", measurement_date="2025-01-01T00:00:00+00:00")  # same run id, another date
    taken = layout.record_path(dest, other)
    other.save(taken)
    report = migrate(sources, dest)
    (kept,) = report.of(migration.CONFLICT)
    assert kept.source.endswith("tiny_b4.json") and "holds another measurement" in kept.detail
    assert read_measurement(taken) == other
