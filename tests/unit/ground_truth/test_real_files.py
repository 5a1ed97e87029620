"""The ground-truth store on the real files of another measurement tool (``../shared/data/graphs-sample.tar.xz``).

The archive is unpacked once per session into a temp dir (about 18 MB, 219 files: 210 records for two
machines -- a Ryzen CPU with v1.0 files in the per-model legacy layout beside v2.0 files, a Jetson Orin
with v2.0 files in the canonical layout and the same data as v1.0 ``<model>_b<N>.json`` in a second
tree -- plus manifests, efficiency curves, metadata, a markdown report and a LICENSE). Every v1.0
file has a v2.0 twin the tool wrote from the same measurement, with ``batch_size`` and
``model_summary``: the twins are the oracle for what the reader derives. Cost: about 20 s of CPU in all
(the slow-marked goal test adds about 20 s).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import warnings
from pathlib import Path

import pandas as pd
import pytest

import helpers.ground_truth
from helpers.cli.ground_truth import main as cli_main
from helpers.ground_truth import estimator as le
from helpers.ground_truth import layout, migration, store
from helpers.ground_truth.layout import CANONICAL, LEGACY_BATCH, LEGACY_PER_MODEL
from helpers.ground_truth.migration import migrate
from helpers.ground_truth.store import GroundTruthLoader
from helpers.ground_truth.targets import target_for
from helpers.run.project import project_root

# the sample's manifests disagree with its files (Ryzen) or are missing (second tree): warned, tested below
pytestmark = pytest.mark.filterwarnings("ignore:.*does not agree with the record files:UserWarning")
RYZEN, JETSON = "ryzen_9_8945hs", "jetson_orin_15w"
NON_RECORDS = {
    "calibration metadata": 1,
    "efficiency curves": 4,
    "manifest": 2,
    "markdown report": 1,
    "other file (no suffix)": 1,
}


@pytest.fixture(scope="session")
def sample(shared_dir: Path, tmp_path_factory) -> Path:
    archive = shared_dir / "data" / "graphs-sample.tar.xz"
    if not archive.is_file():
        pytest.skip(f"{archive} missing")
    target = tmp_path_factory.mktemp("graphs")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target / "graphs-sample"


def raw_documents(root: Path) -> dict[Path, dict]:
    """Every JSON file of the tree that holds measurements, parsed with nothing but json."""
    found = {}
    for path in root.rglob("*.json"):
        data = json.loads(path.read_text())
        if "subgraphs" in data:
            found[path] = data
    return found


def twin_key(data: dict) -> tuple:
    return data["hardware_id"], data["precision"], data["model"], data["measurement_date"]


@pytest.fixture(scope="session")
def in_place(sample: Path) -> dict[Path, store.StoredRecord]:
    """Every record file of the sample as the loader reads it in place, over both of its trees."""
    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # manifests: their own test
        for tree in ("calibration_data", "measurements"):
            loader = GroundTruthLoader(sample / tree)
            for hardware_id in loader.list_hardware():
                found |= {item.path: item for item in loader.records(hardware_id)}
    return found


def test_the_documented_import_path_works():
    assert helpers.ground_truth.GroundTruthLoader is GroundTruthLoader


def test_every_record_of_the_sample_is_read_in_place_in_all_three_layouts(sample, in_place):
    raw = raw_documents(sample)
    assert set(in_place) == set(raw) and len(raw) == 210
    layouts = {}
    for item in in_place.values():
        layouts[item.layout] = layouts.get(item.layout, 0) + 1
    assert layouts == {CANONICAL: 105, LEGACY_PER_MODEL: 15, LEGACY_BATCH: 90}
    assert {i.written_version for i in in_place.values()} == {"1.0", "2.0"}


def test_v1_files_get_batch_and_summary_equal_to_what_the_tool_wrote_in_their_v2_twins(sample, in_place):
    raw = raw_documents(sample)
    twins = {twin_key(d): d for d in raw.values() if d["schema_version"] == "2.0"}
    v1 = [p for p, d in raw.items() if d["schema_version"] == "1.0"]
    assert len(v1) == 105
    for path in v1:
        record, twin = in_place[path].record, twins[twin_key(raw[path])]
        assert record.batch_size == twin["batch_size"], path  # from the name: efficientnet_b1_b4 -> batch 4
        summary = record.model_summary
        assert summary.num_subgraphs == len(raw[path]["subgraphs"]) == twin["model_summary"]["num_subgraphs"]
        assert summary.total_latency_ms == pytest.approx(twin["model_summary"]["total_latency_ms"], rel=1e-12)
        assert summary.total_flops == twin["model_summary"]["total_flops"]
        assert any(n.startswith("batch_size:") for n in record.normalization)
    efficientnet = in_place[sample / "measurements" / JETSON / "fp16" / "efficientnet_b1_b4.json"].record
    assert (efficientnet.model, efficientnet.batch_size) == ("efficientnet_b1", 4)


def test_normalization_is_explicit_and_loses_nothing(sample, in_place):
    raw = raw_documents(sample)
    for path, item in in_place.items():
        data, record = raw[path], item.record
        assert record.precision == data["precision"].lower() and data["precision"].isupper()
        assert f"precision: {data['precision']!r} case-folded to {record.precision!r}" in record.normalization
        assert record.measurement_date == data["measurement_date"]  # kept as written, never shifted to UTC
        assert not record.date_zone_known and any("zone unknown" in n for n in record.normalization)
        assert [s.subgraph_id for s in record.subgraphs] == [str(s["subgraph_id"]) for s in data["subgraphs"]]
        assert record.system_state is None and record.input_shape is None
        assert record.thermal_profile == data["thermal_profile"]  # null on the CPU
        for sub, original in zip(record.subgraphs, data["subgraphs"]):
            assert sub.measured_latency.mean == original["measured_latency"]["mean"]
            assert sub.efficiency.samples == original["efficiency"]["samples"]  # 0 for zero-FLOP subgraphs
    assert any(s.flops == 0 and s.efficiency.samples == 0 for i in in_place.values() for s in i.record.subgraphs)


def test_the_runtime_is_read_from_what_each_file_says_never_from_the_schema_default(sample, in_place):
    """None of the sample's files names its runtime; every one was written by the graphs tool's
    measure_efficiency.py, which runs the subgraphs with PyTorch (torch.fx) on its device: cuda on the Jetson,
    cpu on the Ryzen. The reader says so, and says how it knows."""
    raw = raw_documents(sample)
    assert not any("runtime" in d for d in raw.values())
    devices = {}
    for path, item in in_place.items():
        record, data = item.record, raw[path]
        assert data["tool_version"].startswith("measure_efficiency.py")
        assert record.runtime == "torch" and record.key == f"{record.model}-torch"
        (note,) = [n for n in record.normalization if n.startswith("runtime:")]
        assert f"read as 'torch': tool_version {data['tool_version']!r}" in note
        assert f"on device {data['device']!r}" in note
        devices.setdefault(record.hardware_id, set()).add(record.device)
    assert devices == {JETSON: {"cuda"}, RYZEN: {"cpu"}}


def test_a_foreign_file_that_does_not_show_its_runtime_is_unknown(sample, tmp_path):
    """The same real file with a tool_version nothing recognizes: labelled unknown, never guessed."""
    source = sample / "calibration_data" / JETSON / "measurements" / "fp16" / "resnet18_b4.json"
    data = json.loads(source.read_text()) | {"tool_version": "some_profiler 3.1"}
    path = tmp_path / JETSON / "measurements" / "fp16" / "resnet18_b4.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    record = store.read_measurement(path)
    assert record.runtime == "unknown" and record.key == "resnet18-unknown"
    assert "runtime: absent, read as 'unknown'" in " ".join(record.normalization)


def test_one_record_per_configuration_is_used_and_the_rest_are_named_duplicates(sample, in_place):
    loader = GroundTruthLoader(sample / "calibration_data")
    with pytest.warns(UserWarning, match="does not agree"):
        table = loader.summary(RYZEN)
    assert len(table) == 30 and table["used"].sum() == 15
    assert set(table.loc[table["used"], "layout"]) == {CANONICAL}  # same measurement: the canonical file wins
    assert table.loc[~table["used"], "note"].str.startswith("same measurement as").all()
    assert len(loader.list_models(RYZEN, "FP32")) == 15
    record = loader.load(RYZEN, "vit_b_16", "fp32", 1, runtime="torch")
    assert record.model_summary.total_latency_ms == pytest.approx(93.36, abs=0.01)


def test_foreign_manifests_are_used_only_when_they_agree_and_the_loader_writes_nothing(sample, tmp_path):
    tree = shutil.copytree(sample / "calibration_data", tmp_path / "calibration_data")
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    loader = GroundTruthLoader(tree)
    assert len(loader.load_all(JETSON)) == 90
    assert loader.manifest_status[JETSON] == []  # lists the 90 files, latencies to 4 decimals, no runtime field
    with pytest.warns(UserWarning, match="rebuilt in memory"):
        loader.load_all(RYZEN)
    assert "fp32/measurements/efficientnet_b0.json: record file not listed" in loader.manifest_status[RYZEN]
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before

    written = loader.rebuild_manifest(RYZEN)[0]
    assert written["schema_version"] == "2.0" and len(written["measurements"]) == 30
    assert all(e["runtime"] == "torch" for e in written["measurements"])
    assert loader.check_manifest(RYZEN) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(GroundTruthLoader(tree).load_all(RYZEN)) == 15


def test_model_summaries_from_the_migrated_stores_manifest_equal_the_files(sample, tmp_path):
    """After migration the store's manifests are the project's (format 2): load_model_summary answers from them,
    and what they say is what the record files say, for every configuration of both machines."""
    import time

    migrate([sample], tmp_path / "store")
    loader = GroundTruthLoader(tmp_path / "store")
    for hardware_id in (JETSON, RYZEN):
        start = time.perf_counter()
        listed = loader.manifest_summaries(hardware_id)
        fast = time.perf_counter() - start
        configurations = loader.list_configurations(hardware_id)
        assert listed is not None and sorted(listed) == configurations
        for c in configurations:
            assert (
                listed[c]
                == loader.load(hardware_id, c["model"], c["precision"], c["batch_size"], c["runtime"]).model_summary
            )
        start = time.perf_counter()
        GroundTruthLoader(tmp_path / "store").load_all(hardware_id)
        print(
            f"{hardware_id}: {len(listed)} summaries from the manifest in {fast * 1e3:.1f} ms, "
            f"all records read in {(time.perf_counter() - start) * 1e3:.0f} ms"
        )


def test_a_foreign_manifest_that_disagrees_with_a_file_is_not_used(sample, tmp_path):
    tree = shutil.copytree(sample / "calibration_data" / JETSON, tmp_path / JETSON)
    manifest = json.loads((tree / "manifest.json").read_text())
    manifest["measurements"][0]["total_latency_ms"] += 1.0
    (tree / "manifest.json").write_text(json.dumps(manifest))
    loader = GroundTruthLoader(tmp_path)
    with pytest.warns(UserWarning, match="total_latency_ms"):
        records = loader.load_all(JETSON)
    assert len(records) == 90


@pytest.fixture(scope="module")
def migrated(sample, tmp_path_factory):
    dest = tmp_path_factory.mktemp("store") / "store"
    return migrate([sample], dest), dest


def test_migrating_the_sample_writes_each_measurement_once_and_lists_what_is_not_a_record(sample, migrated):
    report, dest = migrated
    assert report.failed == []
    counts = report.counts()
    assert counts.loc[JETSON, migration.MIGRATED] == 90 and counts.loc[JETSON, store.DUPLICATE] == 90
    assert counts.loc[RYZEN, migration.MIGRATED] == 15 and counts.loc[RYZEN, store.DUPLICATE] == 15
    kinds = {}
    for _, kind in report.non_records:
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == NON_RECORDS
    text = report.summary()
    assert "wrote 105 records" in text and "0 failed" in text and "markdown report (1)" in text
    assert sorted(p.relative_to(dest).parts[0] for p in dest.glob("*/manifest.json")) == [JETSON, RYZEN]


def test_the_migrated_store_reloads_with_the_foreign_manifests_totals_and_the_same_records(sample, migrated, in_place):
    _, dest = migrated
    loader = GroundTruthLoader(dest)
    assert loader.list_hardware() == [JETSON, RYZEN]
    for hardware_id in (JETSON, RYZEN):
        assert loader.check_manifest(hardware_id) == []
        foreign = json.loads((sample / "calibration_data" / hardware_id / "manifest.json").read_text())
        ours = {
            (e["model"], e["precision"], e["batch_size"]): e
            for e in json.loads((dest / hardware_id / "manifest.json").read_text())["measurements"]
        }
        assert len(ours) == len(foreign["measurements"])
        for entry in foreign["measurements"]:
            mine = ours[(entry["model"], entry["precision"], entry["batch_size"])]
            assert mine["total_latency_ms"] == pytest.approx(entry["total_latency_ms"], abs=5e-5)
            assert (mine["total_flops"], mine["num_subgraphs"]) == (entry["total_flops"], entry["num_subgraphs"])
            assert mine["measurement_date"] == entry["measurement_date"]
    used_in_place = {
        (i.record.hardware_id, i.configuration): i.record
        for i in in_place.values()
        if i.used and i.path.is_relative_to(sample / "calibration_data")
    }
    reloaded = {
        (h, c): loader.load(h, *c[:1], c.precision, c.batch_size, c.runtime)
        for h in loader.list_hardware()
        for c in loader.list_configurations(h)
    }
    assert reloaded == used_in_place  # lossless: the normalization notes travel with the record


def test_migrating_again_and_dry_runs_write_nothing(sample, migrated, tmp_path):
    _, dest = migrated
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    again = migrate([sample / "calibration_data" / RYZEN], dest)
    assert [e.outcome for e in again.entries].count(migration.IN_STORE) == 15 and not again.of(migration.MIGRATED)
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before
    fresh = tmp_path / "fresh"
    dry = migrate([sample / "calibration_data" / RYZEN], fresh, dry_run=True)
    assert len(dry.of(migration.MIGRATED)) == 15 and not fresh.exists()
    assert "would write 15 records" in dry.summary()


def test_a_bad_file_fails_alone_and_holds_back_only_its_hardware(sample, tmp_path, capsys):
    source = tmp_path / "src"
    shutil.copytree(sample / "calibration_data" / RYZEN, source / RYZEN)
    jetson = source / JETSON / "measurements" / "fp32"
    jetson.mkdir(parents=True)
    for name in ("resnet18_b1.json", "resnet18_b4.json", "vgg16_b1.json"):
        shutil.copy(sample / "calibration_data" / JETSON / "measurements" / "fp32" / name, jetson)
    (jetson / "vgg16_b1.json").write_text((jetson / "vgg16_b1.json").read_text()[:5000])  # truncated
    broken = json.loads((jetson / "resnet18_b4.json").read_text())
    broken["subgraphs"][3]["flops"] = "many"
    (jetson / "resnet18_b4.json").write_text(json.dumps(broken))

    report = migrate([source], tmp_path / "dest")
    failures = {Path(e.source).name: e.detail for e in report.failed}
    assert set(failures) == {"vgg16_b1.json", "resnet18_b4.json"}
    assert "not valid JSON" in failures["vgg16_b1.json"] and "vgg16_b1.json" in failures["vgg16_b1.json"]
    assert "'subgraphs[3].flops' must be an integer" in failures["resnet18_b4.json"]
    assert [Path(e.source).name for e in report.of(migration.HELD_BACK)] == ["resnet18_b1.json"]
    assert len(report.of(migration.MIGRATED)) == 15 and not (tmp_path / "dest" / JETSON).exists()

    assert cli_main(["migrate", str(source), "--dest", str(tmp_path / "dest2")]) == 1
    out = capsys.readouterr().out
    assert "HELD BACK" in out and "FAILED" in out and "wrote 15 records" in out

    with pytest.raises(ValueError, match=r"resnet18_b4.json: field 'subgraphs\[3\].flops'"):
        GroundTruthLoader(source).load_all(JETSON)


def test_a_source_that_does_not_exist_is_one_line(tmp_path, capsys):
    assert cli_main(["migrate", str(tmp_path / "nowhere"), "--dest", str(tmp_path / "dest")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "nowhere" in err and "Traceback" not in err


def test_two_ids_of_one_machine_are_flagged_and_merged_by_an_alias(sample, tmp_path, capsys):
    store_dir = tmp_path / "store"
    models = ("resnet18", "resnet50", "vgg11", "vit_b_32")
    for model in models:
        path = store_dir / RYZEN / "measurements" / "fp32" / f"{model}_b1.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample / "calibration_data" / RYZEN / "measurements" / "fp32" / path.name, path)
    twin = store_dir / "amd_ryzen_9_8945hs"
    for path in (store_dir / RYZEN / "measurements").rglob("*.json"):  # the same machine, written under a 2nd id
        data = json.loads(path.read_text())
        data["hardware_id"] = twin.name
        for sub in data["subgraphs"]:
            sub["measured_latency"]["mean"] *= 1.0005
        data.pop("model_summary")
        target = twin / path.relative_to(store_dir / RYZEN)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data))

    assert cli_main(["hardware", "--store", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert f"calib ground-truth alias {RYZEN} amd_ryzen_9_8945hs" in out
    pairs = store.likely_duplicates(GroundTruthLoader(store_dir))
    assert pairs[["hardware_id", "same_as", "shared"]].values.tolist() == [["amd_ryzen_9_8945hs", RYZEN, 4]]
    assert pairs["median_latency_diff_pct"].iloc[0] == pytest.approx(0.05, abs=0.01)

    assert cli_main(["alias", RYZEN, "amd_ryzen_9_8945hs", "--store", str(store_dir)]) == 0
    assert json.loads((store_dir / layout.ALIASES).read_text()) == {"aliases": {RYZEN: "amd_ryzen_9_8945hs"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loader = GroundTruthLoader(store_dir)
        assert loader.list_hardware() == ["amd_ryzen_9_8945hs"]
        assert [d.name for d in loader.directories("amd_ryzen_9_8945hs")] == ["amd_ryzen_9_8945hs", RYZEN]
        items = loader.records("amd_ryzen_9_8945hs")
        assert len(items) == 8 and len(loader.load_all("amd_ryzen_9_8945hs")) == 4
        assert {i.record.hardware_id for i in items} == {"amd_ryzen_9_8945hs"}
        note = f"hardware_id: {RYZEN!r} mapped to 'amd_ryzen_9_8945hs' by {layout.ALIASES}"
        assert [note in i.record.normalization for i in items] == [i.directory == RYZEN for i in items]

    dest = tmp_path / "dest"
    dest.mkdir()
    shutil.copy(store_dir / layout.ALIASES, dest)
    report = migrate([store_dir], dest)
    assert report.failed == [] and len(report.of(migration.MIGRATED)) == 4 and len(report.of(store.DUPLICATE)) == 4
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == ["amd_ryzen_9_8945hs"]
    assert GroundTruthLoader(dest).list_models("amd_ryzen_9_8945hs") == sorted(models)


def test_validate_beats_the_naive_baseline_leave_one_model_out_on_the_cpu(sample, in_place, tmp_path, capsys):
    records = [i.record for i in in_place.values() if i.used and i.record.hardware_id == RYZEN]
    assert target_for(records) == "subgraph_sum"  # these files hold no end-to-end latency
    csv = tmp_path / "lomo.csv"
    args = ["validate", "--store", str(sample / "calibration_data"), "--hardware", RYZEN, "--csv", str(csv)]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "sum of the subgraphs' mean latencies" in out and "naive = total FLOPs / theoretical peak" in out
    validation = pd.read_csv(csv)
    across = validation[validation["held_out"].str.startswith("machine")]
    assert set(across["held_out"]) == {"machine, k=0", "machine, k=10"}  # the store's Jetson predicts it too
    validation = validation[validation["held_out"] == "model"]
    assert sorted(validation["model"]) == sorted(r.model for r in records)  # every model left out once
    measured = {r.model: r.model_summary.total_latency_ms for r in records}
    assert validation["measured_ms"].tolist() == pytest.approx([measured[m] for m in validation["model"]])
    (row,) = le.lomo_summary(validation).to_dict(orient="records")
    assert (row["hardware_id"], row["precision"], row["models"], row["predictions"]) == (RYZEN, "fp32", 15, 15)
    assert f"{row['median_ape_pct']:.1f}" in out and f"{row['naive_median_ape_pct']:.1f}" in out
    assert row["naive_median_ape_pct"] > 75  # FLOPs / peak: the CPU reaches 1-27% of its peak
    assert row["median_ape_pct"] < row["naive_median_ape_pct"] / 4


def test_validate_leaves_out_models_batch_sizes_and_precisions_on_the_jetson(sample, tmp_path, capsys):
    """The Jetson holds 10 models x 3 batch sizes x 3 precisions: each split predicts all 90 records; the printed
    table has the share within +-10% and Spearman's rank correlation, which scipy's spearmanr confirms, and labels
    the rows torch (the runtime measure_efficiency.py used), never onnxruntime."""
    from scipy import stats

    csv = tmp_path / "validation.csv"
    args = ["validate", "--store", str(sample / "calibration_data"), "--hardware", JETSON, "--csv", str(csv)]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "within_10_pct" in out and "spearman" in out and "onnxruntime" not in out
    validation = pd.read_csv(csv)
    assert validation.groupby("held_out").size().to_dict() == {
        "batch_size": 90,
        "model": 90,
        "precision": 90,
        "machine, k=0": 90,  # from the Ryzen's records and the Jetson's peaks
        "machine, k=10": 3 * 20 * 20,  # 20 draws of 10 calibration records per precision, each predicting 20
    }
    assert set(validation["runtime"]) == {"torch"}
    summary = le.lomo_summary(validation)
    assert len(summary) == 15
    for row in summary.itertuples():
        rows = validation[(validation["held_out"] == row.held_out) & (validation["precision"] == row.precision)]
        assert row.spearman == pytest.approx(stats.spearmanr(rows["predicted_ms"], rows["measured_ms"]).statistic)
        assert row.within_10_pct == pytest.approx((rows["ape_pct"] <= 10).mean() * 100)
        assert row.naive_within_10_pct == 0  # FLOPs / peak: the GPU reaches a few % of its peak
        assert row.spearman > row.naive_spearman  # the estimator ranks the models better than FLOPs do
        shown = f"{row.held_out} {JETSON} torch {row.precision} "
        assert any(" ".join(line.split()).startswith(shown) for line in out.splitlines()), shown


@pytest.mark.slow
def test_the_estimator_meets_its_goal_on_every_machine_and_precision_of_the_sample(migrated):
    _, dest = migrated
    loader = GroundTruthLoader(dest)
    validation = [le.leave_one_model_out(loader.load_all(h), "subgraph_sum", True) for h in loader.list_hardware()]
    summary = le.lomo_summary(pd.concat(validation))
    assert len(summary) == 4 and (summary["median_ape_pct"] <= 13).all(), summary
    assert (summary["spearman"] >= 0.94).all() and (summary["spearman"] > summary["roofline_spearman"]).all(), summary


def test_efficiency_curves_and_their_figure_for_a_store_read_in_place(sample, tmp_path, capsys):
    tree = shutil.copytree(sample / "calibration_data" / RYZEN, tmp_path / RYZEN)
    assert cli_main(["curves", "--store", str(tmp_path)]) == 0
    folder = tree / "efficiency_curves" / "fp32"
    assert capsys.readouterr().out.splitlines() == [
        f"store: {tmp_path}",
        str(folder / "curves.json"),
        str(folder / "curves.png"),
    ]
    document = json.loads((folder / "curves.json").read_text())
    assert (document["hardware_id"], document["precision"], document["target"]) == (RYZEN, "fp32", "subgraph_sum")
    (curves,) = document["runtimes"].values()
    records = GroundTruthLoader(tmp_path).load_all(RYZEN)
    with_flops = [s for r in records for s in r.subgraphs if s.flops > 0]
    assert set(curves["curves"]) == {s.operation_type for s in with_flops}
    assert sum(sum(c["count"]) for c in curves["curves"].values()) == len(with_flops)
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_list_prints_every_configuration_and_the_manifest_state(sample, capsys):
    assert cli_main(["list", "--store", str(sample / "calibration_data"), "--hardware", RYZEN, "--all"]) == 0
    out = capsys.readouterr().out
    assert "15 configurations from 30 record files" in out and "manifest of ryzen_9_8945hs: not used" in out
    assert out.count("same measurement as") == 15


def test_phase05_publishes_into_the_real_store_where_this_machine_is_an_alias_of_its_ryzen(sample, tmp_path):
    """Phase 05's measurement published into a copy of the real store, this machine aliased to the Ryzen there:
    records_with is the real records merged with the new ones exactly as the loader reads them afterwards, and
    no record file the other tool wrote changes."""
    from helpers.ground_truth import hardware, latency, runtime_latency

    root = Path(shutil.copytree(sample / "calibration_data", tmp_path / "store"))
    profile = hardware.profile_hardware(measure=False)
    profile.save(layout.hardware_profile_path(root, profile.hardware_id))
    store.HardwareAliases.load(root).with_alias(profile.hardware_id, RYZEN).save(root)
    foreign = {p: p.read_bytes() for p in (root / RYZEN).rglob("*.json") if "efficiency_curves" not in p.parts}
    model = project_root() / "runs/reference/results/02_train/model.onnx"
    result = runtime_latency.measure_runtimes(
        "ref_cnn",
        {"fp32": model},
        runtimes=["onnxruntime"],
        precisions=["fp32"],
        store=root,
        settings=latency.MeasurementSettings(repeats=2, warmup=1),
        progress=False,
    )
    expected = runtime_latency.records_with(result)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the Ryzen's own manifest disagrees: tested above
        real = GroundTruthLoader(sample / "calibration_data").load_all(RYZEN)
        assert len(expected) == len(real) + 1 and {r.hardware_id for r in expected} == {RYZEN}
        runtime_latency.publish(result)
        assert GroundTruthLoader(root).load_all(RYZEN) == expected
    assert {p: p.read_bytes() for p in foreign} == foreign
    assert (layout.efficiency_curves_dir(root, RYZEN, "fp32") / "curves.json").is_file()
