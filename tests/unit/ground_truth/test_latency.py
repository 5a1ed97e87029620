"""Latency measurement on real onnxruntime sessions and torch models; the hardware description."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from helpers import runtime
from helpers.cli.ground_truth import main as cli_main
from helpers.ground_truth import campaign, hardware, latency, runtime_latency
from helpers.ground_truth.layout import efficiency_curves_dir, hardware_profile_path
from helpers.ground_truth.measure_onnxruntime import measure_onnx
from helpers.ground_truth.measure_torch import bf16_support, measure_torch
from helpers.ground_truth.measurement import Measurement, MeasurementSettings
from helpers.ground_truth.records import MeasurementRecord
from helpers.ground_truth.store import GroundTruthLoader
from helpers.models.architectures import build_model
from helpers.models.onnx_export import export_onnx
from helpers.run.headline import speedup_text
from helpers.run.project import project_root

BATCH = 2
SHAPE = (8, 8, 1)
FAST = MeasurementSettings(repeats=3, warmup=1)


@pytest.fixture(scope="module")
def profile() -> hardware.HardwareProfile:
    return hardware.profile_hardware(measure=False)


@pytest.fixture(scope="module")
def digits_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("digits_cnn", 10).eval()


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory, digits_cnn) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    fp32 = export_onnx(digits_cnn, root / "digits_cnn.onnx", SHAPE)
    return {"fp32": fp32, "int8": campaign.quantize_int8(fp32, root / "digits_cnn_int8.onnx", SHAPE, images=8)}


@pytest.fixture(scope="module")
def measured(onnx_models, profile) -> dict[str, Measurement]:
    return {
        p: measure_onnx(path, model="digits_cnn", precision=p, batch_size=BATCH, hardware=profile, settings=FAST)
        for p, path in onnx_models.items()
    }


def torch_flops(module: torch.nn.Module, batch: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(batch, *SHAPE))
    return counter.get_total_flops()


def optimized_graph(path: Path, tmp_path: Path) -> onnx.GraphProto:
    """The graph onnxruntime executes, dumped by onnxruntime itself (same options as the measurement)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx")).graph


def test_one_subgraph_per_executed_node(measured, onnx_models, tmp_path):
    record = measured["fp32"].record
    executed = [n.name for n in optimized_graph(onnx_models["fp32"], tmp_path).node]
    assert sorted(s.node_names[0] for s in record.subgraphs) == sorted(executed)
    patterns = [s.fusion_pattern for s in record.subgraphs]
    assert not any("BatchNormalization" in p for p in patterns)  # folded into the convolutions
    assert sum(s.operation_type == "conv" for s in record.subgraphs) == 3
    assert all(p.endswith("+Relu") for p, s in zip(patterns, record.subgraphs) if s.operation_type == "conv")


def test_raw_samples_and_statistics_agree(measured):
    m = measured["fp32"]
    assert m.samples["end_to_end_ms"].shape == (FAST.repeats,)
    assert m.samples["subgraph_ms"].shape == (len(m.record.subgraphs), FAST.repeats)
    assert list(m.samples["subgraph_ids"]) == [s.subgraph_id for s in m.record.subgraphs]
    assert m.record.model_summary.end_to_end_latency.mean == pytest.approx(m.samples["end_to_end_ms"].mean())
    for sub, row in zip(m.record.subgraphs, m.samples["subgraph_ms"]):
        assert sub.measured_latency.p50 == pytest.approx(np.median(row))
    assert m.record.input_shape == [BATCH, *SHAPE] and m.record.batch_size == BATCH


def test_cpu_time_is_kept_for_single_threaded_runs_only(measured, onnx_models, profile):
    m = measured["fp32"]
    wall, cpu = m.samples["end_to_end_ms"], m.samples["end_to_end_cpu_ms"]
    assert np.all(cpu <= wall * 1.01 + 0.01)  # one thread cannot be on the CPU longer than the call lasted
    assert m.record.model_summary.end_to_end_cpu_time.mean == pytest.approx(cpu.mean())
    two = measure_onnx(
        onnx_models["fp32"],
        model="d",
        precision="fp32",
        batch_size=1,
        hardware=profile,
        settings=MeasurementSettings(repeats=2, warmup=0, threads=2),
    )
    assert two.record.model_summary.end_to_end_cpu_time is None and "end_to_end_cpu_ms" not in two.samples


def test_onnx_flops_match_torch_flop_counter(measured, digits_cnn):
    """Convolution and matrix-product FLOPs from ORT's graph equal torch's own count of the same model."""
    for precision in ("fp32", "int8"):
        heavy = sum(s.flops for s in measured[precision].record.subgraphs if s.operation_type in ("conv", "matmul"))
        assert heavy == torch_flops(digits_cnn, BATCH)


def test_bytes_follow_the_precision_run(measured):
    first = measured["fp32"].record.subgraphs[0]
    assert first.total_bytes >= BATCH * int(np.prod(SHAPE)) * 4  # reads the float32 input at least
    fp32_convs = [s for s in measured["fp32"].record.subgraphs if s.operation_type == "conv"]
    int8_convs = [s for s in measured["int8"].record.subgraphs if s.operation_type == "conv"]
    assert [s.fusion_pattern for s in int8_convs] == ["QLinearConv"] * 3
    for f, i in zip(fp32_convs, int8_convs):
        assert i.flops == f.flops
        assert i.total_bytes < 0.4 * f.total_bytes  # 1-byte activations and weights against 4


def test_record_is_complete_and_valid(measured, profile, tmp_path):
    record = measured["int8"].record
    assert (record.hardware_id, record.precision, record.runtime) == (profile.hardware_id, "int8", "onnxruntime")
    assert record.theoretical_peak_flops == profile.theoretical_peak_flops["int8"]
    assert record.system_state is not None and record.model_summary.end_to_end_latency is not None
    assert MeasurementRecord.load(record.save(tmp_path / "r.json")) == record


def test_torch_subgraphs_are_leaf_module_calls(digits_cnn, profile):
    m = measure_torch(
        digits_cnn,
        model="digits_cnn",
        precision="fp32",
        batch_size=BATCH,
        image_shape=SHAPE,
        hardware=profile,
        settings=FAST,
    )
    leaves = [n for n, mod in digits_cnn.named_modules() if n and not list(mod.children())]
    assert [s.node_names[0] for s in m.record.subgraphs] == leaves  # every leaf called once, in order
    heavy = sum(s.flops for s in m.record.subgraphs if s.operation_type in ("conv", "matmul"))
    assert heavy == torch_flops(digits_cnn, BATCH)
    conv = next(s for s in m.record.subgraphs if s.fusion_pattern == "Conv2d")
    assert conv.total_bytes == 4 * (BATCH * 64 * 1 + BATCH * 64 * 16 + 16 * 1 * 9)  # in, out, weights (no bias)
    assert m.record.key == "digits_cnn-torch" and m.samples["subgraph_ms"].shape == (len(leaves), FAST.repeats)
    assert digits_cnn.training is False


def test_bf16_runs_at_two_bytes_or_is_refused(digits_cnn, profile):
    supported, reason = bf16_support()
    if not supported:
        with pytest.raises(RuntimeError, match="bf16"):
            measure_torch(
                digits_cnn,
                model="d",
                precision="bf16",
                batch_size=BATCH,
                image_shape=SHAPE,
                hardware=profile,
                settings=FAST,
            )
        return
    m = measure_torch(
        digits_cnn, model="d", precision="bf16", batch_size=BATCH, image_shape=SHAPE, hardware=profile, settings=FAST
    )
    conv = next(s for s in m.record.subgraphs if s.fusion_pattern == "Conv2d")
    assert conv.total_bytes == 4 * BATCH * 64 + 2 * (BATCH * 64 * 16 + 16 * 9)  # fp32 input, bf16 output and weights


def test_high_variation_is_flagged(onnx_models, profile):
    strict = MeasurementSettings(repeats=3, warmup=1, cv_warning=1e-9)
    m = measure_onnx(onnx_models["fp32"], model="d", precision="fp32", batch_size=1, hardware=profile, settings=strict)
    assert any("CV" in w and "another heavy process" in w for w in m.warnings)


def test_bad_inputs_fail_before_measuring(onnx_models, profile, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        measure_onnx(tmp_path / "missing.onnx", model="d", precision="fp32", batch_size=1, hardware=profile)
    with pytest.raises(ValueError, match="fp32 or int8"):
        measure_onnx(onnx_models["fp32"], model="d", precision="bf16", batch_size=1, hardware=profile)
    with pytest.raises(ValueError, match="repeats >= 2"):
        MeasurementSettings(repeats=1)


def test_fixed_batch_models_are_refused_or_skipped(digits_cnn, profile, tmp_path):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(digits_cnn, (torch.zeros(1, *SHAPE),), str(path), input_names=["images"], dynamo=False)
    assert campaign.fixed_batch_size(path) == 1
    with pytest.raises(ValueError, match="fixed at 1"):
        measure_onnx(path, model="d", precision="fp32", batch_size=4, hardware=profile, settings=FAST)
    profile.save(hardware_profile_path(tmp_path / "store", profile.hardware_id))  # no GEMM/bandwidth run
    result = measure_on_onnxruntime("fixed", {"fp32": path}, tmp_path / "store", (1, 4))
    assert [r.batch_size for r in result.records] == [1]
    assert result.skipped == [f"fixed fp32 b4: {path} has a fixed batch of 1"]


def measure_on_onnxruntime(model: str, files: dict, store, batch_sizes):
    """Phase 05's measurement (runtime_latency.measure_runtimes) on onnxruntime alone, quick settings."""
    return runtime_latency.measure_runtimes(
        model,
        files,
        runtimes=["onnxruntime"],
        precisions=list(files),
        store=store,
        batch_sizes=batch_sizes,
        settings=FAST,
        progress=False,
    )


def store_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_phase05_measurement_is_stored_only_when_published(onnx_models, profile, tmp_path):
    """measure_runtimes writes nothing (a phase 05 failing after it leaves the store as it was); records_with
    is what the store then holds; publish stores it all, the manifest and efficiency curves with it."""
    root = tmp_path / "store"
    profile.save(hardware_profile_path(root, profile.hardware_id))
    runtime_latency.publish(measure_on_onnxruntime("run_cnn", onnx_models, root, (1,)))  # an earlier run
    before = store_files(root)
    result = measure_on_onnxruntime("run_cnn", onnx_models, root, (1, 4))
    assert store_files(root) == before
    expected = runtime_latency.records_with(result)
    assert runtime_latency.publish(result) == result.paths and all(p.is_file() for p in result.paths)
    loader = GroundTruthLoader(root)
    assert loader.load_all(profile.hardware_id) == expected
    assert [r.run_id for r in expected] == [result.run_id] * 4, "this run's b1 records replaced the earlier run's"
    assert loader.list_configurations(profile.hardware_id) == [
        ("run_cnn", "onnxruntime", p, b) for p in ("fp32", "int8") for b in (1, 4)
    ]
    assert loader.check_manifest(profile.hardware_id) == []
    assert sorted(r.run_index for r in result.records) == [0, 1, 2, 3]
    samples = loader.load_samples(profile.hardware_id, "run_cnn", "int8", 4)
    assert samples["end_to_end_ms"].shape == (FAST.repeats,)
    assert (efficiency_curves_dir(root, profile.hardware_id, "int8") / "curves.json").is_file()
    assert runtime_latency.publish(result) == [], "published once"


def test_cli_measure_narrows_the_profile(tmp_path):
    store = tmp_path / "store"
    code = cli_main(
        [
            "measure",
            "--store",
            str(store),
            "--models",
            "mlp_digits",
            "--precisions",
            "fp32",
            "--batch-sizes",
            "1",
            "--repeats",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    hw = hardware.hardware_id()
    assert GroundTruthLoader(store).list_configurations(hw) == [
        ("mlp_digits", "onnxruntime", "fp32", 1),
        ("mlp_digits", "openvino", "fp32", 1),
        ("mlp_digits", "torch", "fp32", 1),
    ]
    saved = hardware.HardwareProfile.load(hardware_profile_path(store, hw))
    assert 0 < saved.measured_gemm_flops <= saved.theoretical_peak_flops["fp32"]
    assert saved.measured_bandwidth_bytes_per_s > 0


def test_the_shipped_sweep_profile():
    config = campaign.SweepConfig.from_yaml(project_root() / "params" / "ground_truth.yaml")
    assert len(config.models) >= 5 and config.batch_sizes == (1, 8, 32)
    assert set(config.variants) == set(campaign.VARIANTS)
    with pytest.raises(ValueError, match="unknown sweep keys \\['repaets'\\]"):
        campaign.SweepConfig.from_mapping({"models": ["mlp"], "repaets": 3})


def test_cli_measures_int8_and_bf16_with_openvino_beside_the_other_runtimes(tmp_path, capsys):
    """int8: onnxruntime and OpenVINO on the QDQ file; bf16: torch and OpenVINO where this CPU runs it natively,
    else each skipped with why."""
    store = tmp_path / "store"
    args = ["measure", "--store", str(store), "--models", "mlp_digits", "--precisions", "int8", "bf16"]
    assert cli_main([*args, "--batch-sizes", "1", "--repeats", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    bf16 = [("torch", bf16_support()[0]), ("openvino", runtime.support("openvino", "bf16")[0])]
    expected = [("onnxruntime", "int8"), ("openvino", "int8")] + [(name, "bf16") for name, ok in bf16 if ok]
    records = GroundTruthLoader(store).load_all(hardware.hardware_id())
    assert sorted((r.runtime, r.precision) for r in records) == sorted(expected)
    for name, ok in bf16:
        assert (f"note: bf16/{name}: " in out) == (not ok), out
    assert all(r.batch_size == 1 and r.model == "mlp_digits" for r in records)


def test_a_variant_this_machine_cannot_run_natively_is_skipped_with_why():
    kept, skipped = campaign.supported_variants([("fp32", "openvino"), ("bf16", "onnxruntime")])
    assert kept == [("fp32", "openvino")]
    assert skipped == [
        "bf16/onnxruntime: onnxruntime's CPU provider has no bf16 kernels; run bf16 with runtime='openvino'"
    ]


# ---------------------------------------------------------------- hardware

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 0
core id\t\t: 0
cpu MHz\t\t: 2400.000
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 0
core id\t\t: 0
cpu MHz\t\t: 2400.000
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni
"""


def test_hardware_id_is_a_stable_slug_of_model_and_physical_cores():
    info = hardware.parse_cpuinfo(CPUINFO)
    assert hardware.hardware_id(info, gpu=None) == "intel-r-xeon-r-gold-6148-cpu-2-40ghz-1c"  # 2 threads, 1 core
    assert (
        hardware.hardware_id(info, gpu="NVIDIA H100 80GB HBM3")
        == "intel-r-xeon-r-gold-6148-cpu-2-40ghz-1c-nvidia-h100-80gb-hbm3"
    )
    assert hardware.hardware_id() == hardware.hardware_id()


def test_theoretical_peak_matches_published_per_cycle_rates():
    flags = hardware.cpu_flags(hardware.parse_cpuinfo(CPUINFO))
    # Skylake-SP with two AVX-512 FMA units: 64 single-precision FLOP/cycle/core (Intel's figure)
    assert hardware.flops_per_cycle_per_core("fp32", flags) == 64
    assert hardware.flops_per_cycle_per_core("int8", flags) == 256  # VNNI: 4 int8 MACs per fp32 lane
    assert hardware.flops_per_cycle_per_core("bf16", flags) == 64  # no avx512_bf16: the fp32 rate
    assert hardware.flops_per_cycle_per_core("fp32", frozenset({"sse", "sse2"})) == 8  # 4 lanes, no FMA
    peak = hardware.theoretical_peak_flops("fp32", flags=flags, cores=20, clock_mhz=2400)
    assert peak == pytest.approx(20 * 2.4e9 * 64)


def test_system_state_explains_every_unknown_field():
    state, reasons = hardware.system_state()
    unknown = {name for name, value in state.to_dict().items() if value is None}
    assert unknown == set(reasons)


def test_latency_report_and_figure_agree_with_the_store(onnx_models, profile, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    root = tmp_path / "store"
    profile.save(hardware_profile_path(root, profile.hardware_id))
    result = measure_on_onnxruntime("run_cnn", onnx_models, root, (1, 3))
    report = latency.latency_report(result)
    runtime_latency.publish(result)
    loader = GroundTruthLoader(root)
    assert report["hardware_id"] == profile.hardware_id and report["run_id"] == result.run_id
    assert [(row["precision"], row["batch_size"]) for row in report["measurements"]] == [
        ("fp32", 1),
        ("int8", 1),
        ("fp32", 3),
        ("int8", 3),
    ]
    for row in report["measurements"]:
        args = (profile.hardware_id, "run_cnn", row["precision"], row["batch_size"])
        summary = loader.load(*args).model_summary
        assert root / row["file"] == loader.path(*args)
        assert row["end_to_end_latency_ms"]["max"] == loader.load_samples(*args)["end_to_end_ms"].max()
        assert row["end_to_end_latency_ms"] == summary.end_to_end_latency.to_dict()
        assert row["contention_free_ms"] == summary.end_to_end_cpu_time.min
        assert row["num_subgraphs"] == summary.num_subgraphs
    cpu = {(r["precision"], r["batch_size"]): r["end_to_end_cpu_time_ms"]["min"] for r in report["measurements"]}
    assert report["int8_over_fp32"] == {
        f"run_cnn/onnxruntime/b{b}": pytest.approx(cpu["int8", b] / cpu["fp32", b]) for b in (1, 3)
    }
    fig = latency.latency_figure(result.records)
    assert [ax.get_title().split("\n") for ax in fig.axes] == [
        [
            "batch 1",
            f"INT8 vs FP32: onnxruntime {speedup_text(1 / report['int8_over_fp32']['run_cnn/onnxruntime/b1'])} "
            "(contention-free)",
        ],
        [
            "batch 3",
            f"INT8 vs FP32: onnxruntime {speedup_text(1 / report['int8_over_fp32']['run_cnn/onnxruntime/b3'])} "
            "(contention-free)",
        ],
    ]
    assert all(len(ax.patches) == 2 for ax in fig.axes)
