"""Phase 05 across runtimes: model x runtime x precision x batch into the store, and throughput against the peaks.

:func:`measure_runtimes` measures a run's FP32 and INT8 files on every runtime x precision this
machine runs (``measure_onnxruntime``, ``measure_openvino``; bf16: the FP32 file under OpenVINO's bf16
hint, where the CPU has it) and writes nothing: :func:`records_with` is the store as it will be, for the estimator. Phase 05
stages its records (:func:`stage`: with their raw samples and the machine's profile) among its own
results, under ``store/`` laid out as in the store, and the runner stores them -- :func:`publish_phase`,
the graph's ``publish`` hook of phase 05 -- once the phase's manifest is in place: the last thing the
phase does, so a phase 05 that fails leaves the store as it was (the store write itself is all or
nothing), and the run keeps a copy of what it stored. Each record is a file of its own, named by its
run: a second run of the same model adds repeats, it never replaces the first run's records.
:func:`peak_table` puts each record's throughput next
to this machine's measured GEMM peak of its precision (``helpers.runtime.peak``) and next to the
roofline estimator's prediction for it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from helpers import runtime
from helpers.ground_truth.campaign import QUICK_SETTINGS, SweepResult, fixed_batch_size, store_hardware_profile
from helpers.ground_truth.curves import write_efficiency_curves
from helpers.ground_truth.layout import (
    HARDWARE_PROFILE,
    MEASUREMENTS,
    default_data_dir,
    hardware_profile_path,
    record_path,
    samples_path,
)
from helpers.ground_truth.measure_onnxruntime import measure_onnx
from helpers.ground_truth.measure_openvino import measure_openvino
from helpers.ground_truth.measurement import MeasurementSettings
from helpers.ground_truth.records import MeasurementRecord, new_run_id
from helpers.ground_truth.roofline import RooflineEstimator
from helpers.ground_truth.store import (
    Configuration,
    GroundTruthLoader,
    HardwareAliases,
    apply_alias,
    rebuild_manifest,
    write_lock,
)
from helpers.ground_truth.targets import end_to_end_ms, group_of
from helpers.run import atomic
from helpers.run.params import typed_config

STAGED = "store"  # phase 05's results: the files it stores, laid out as in the store


@dataclass(frozen=True)
class LatencyConfig:
    """Phase 05's typed config (``phase.config``), validated when built: what is measured (runtimes x precisions x
    batch sizes, at ``threads``), how often, and the batch of the timing that decides each precision's runtime."""

    runtimes: tuple[str, ...] = runtime.RUNTIMES
    precisions: tuple[str, ...] = runtime.PRECISIONS
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int = 1
    repeats: int = 20
    warmup: int = 3
    decision_batch: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for key, valid in (("runtimes", runtime.RUNTIMES), ("precisions", runtime.PRECISIONS)):
            chosen = getattr(self, key)
            if not chosen or isinstance(chosen, str) or any(c not in valid for c in chosen):
                raise ValueError(f"{key} must be a non-empty list from {list(valid)}, got {list(chosen)!r}")
        if self.threads < 1 or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ValueError(
                f"threads and every batch size must be >= 1, got threads={self.threads!r}, "
                f"batch_sizes={list(self.batch_sizes)!r}"
            )
        if self.decision_batch < 1:
            raise ValueError(
                f"decision_batch must be >= 1 (the batch size of the timing that picks each precision's default "
                f"runtime), got {self.decision_batch!r}"
            )


def check_params(params: dict, config: dict | None = None) -> LatencyConfig:
    """Phase 05's precheck: its typed config."""
    return typed_config(LatencyConfig, params)


def measure_runtimes(
    model: str,
    files: Mapping[str, str | Path],
    *,
    runtimes: Sequence[str] = runtime.RUNTIMES,
    precisions: Sequence[str] = runtime.PRECISIONS,
    batch_sizes: Sequence[int] = (1,),
    store: str | Path | None = None,
    settings: MeasurementSettings = QUICK_SETTINGS,
    progress: bool = True,
) -> SweepResult:
    """Measure ``files`` (``{"fp32": path, "int8": path}``) on every runtime x precision x batch size.

    bf16 runs the fp32 file. A runtime/precision this machine cannot run, or a batch size the file's
    fixed batch axis refuses, is skipped with the reason. Nothing is written to ``store`` (its hardware
    profile is read, or measured): :func:`publish` stores the result.
    """
    unknown = sorted(set(runtimes) - set(runtime.RUNTIMES)) + sorted(set(precisions) - set(runtime.PRECISIONS))
    if unknown:
        raise ValueError(f"unknown runtimes/precisions {unknown}; valid: {runtime.RUNTIMES}, {runtime.PRECISIONS}")
    paths = {
        p: Path(files["int8" if p == "int8" else "fp32"])
        for p in precisions
        if ("int8" if p == "int8" else "fp32") in files
    }
    missing = sorted(str(p) for p in paths.values() if not p.is_file())
    if missing:
        raise FileNotFoundError(f"ONNX models to measure do not exist: {', '.join(missing)}")
    root = Path(store or default_data_dir())
    hardware = store_hardware_profile(root, save=False)
    result = SweepResult(store=root, run_id=new_run_id(), hardware=hardware)
    jobs = []
    for batch_size in batch_sizes:
        for precision, path in paths.items():
            fixed = fixed_batch_size(path)
            for name in runtimes:
                ok, why = runtime.support(name, precision)
                if not ok:
                    result.skipped.append(f"{model} {name} {precision}: {why}")
                elif fixed not in (None, batch_size):
                    result.skipped.append(f"{model} {precision} b{batch_size}: {path} has a fixed batch of {fixed}")
                else:
                    jobs.append((name, precision, batch_size))
    result.skipped = list(dict.fromkeys(result.skipped))
    for index, (name, precision, batch_size) in enumerate(tqdm(jobs, desc=f"latency {model}", disable=not progress)):
        measure = measure_openvino if name == "openvino" else measure_onnx
        measurement = measure(
            paths[precision],
            model=model,
            precision=precision,
            batch_size=batch_size,
            hardware=hardware,
            settings=settings,
            run_id=result.run_id,
            run_index=index,
        )
        result.add(measurement, record_path(root, measurement.record))
        result.pending.append(measurement)
    return result


def records_with(result: SweepResult) -> list[MeasurementRecord]:
    """What ``GroundTruthLoader(result.store).load_all(hardware_id)`` returns once :func:`publish` has stored
    ``result``: the store's records for this machine (its canonical id, where the store aliases it), with the
    sweep's in place of the configurations it measured (the newest record of a configuration is the one used)."""
    if not result.records:
        return []
    loader = GroundTruthLoader(result.store)
    hardware_id = loader.aliases.canonical(result.records[0].hardware_id)
    stored = loader.load_all(hardware_id) if hardware_id in loader.list_hardware() else []
    measured = [apply_alias(r, loader.aliases) for r in result.records]
    replaced = {Configuration.of(m) for m in measured}
    kept = [r for r in stored if Configuration.of(r) not in replaced]
    return sorted(kept + measured, key=Configuration.of)


def store_root(store_dir: str, run_dir: str | Path) -> Path:
    """Phase 05's store: ``store_dir``, else the default store (:func:`default_data_dir`) of the runs root the run
    is in -- the store ``GroundTruthLoader()`` and ``calib ground-truth`` read by default."""
    return Path(store_dir) if store_dir else default_data_dir(Path(run_dir).parent)


def stage(result: SweepResult, out: Callable[[str], Path]) -> list[Path]:
    """Write what :func:`measure_runtimes` measured -- each record with its raw samples, and the machine's profile --
    through ``out`` (phase 05: ``phase.out``) under ``store/``, laid out as it will lie in the store. Nothing is
    stored: the runner stores it once the phase is complete (:func:`publish_phase`). Returns where the records
    will be stored."""
    staged = {}
    if result.pending:
        staged[hardware_profile_path("", result.hardware.hardware_id).as_posix()] = result.hardware.save
    for measurement in result.pending:
        rel = record_path("", measurement.record)
        staged[samples_path(rel).as_posix()] = lambda path, m=measurement: atomic.save_npz(path, **m.samples)
        staged[rel.as_posix()] = measurement.record.save
    for rel, write in staged.items():
        write(out(f"{STAGED}/{rel}"))
    return result.paths


def publish_phase(run_dir: Path, phase_id: str, params: dict) -> list[Path]:
    """Phase 05's ``publish`` hook (``helpers.run.graph``): the records it staged among its results go into its
    store (``store_dir``, :func:`store_root`), once the phase's manifest is in place."""
    return store_staged(Path(run_dir) / "results" / phase_id / STAGED, store_root(params["store_dir"], run_dir))


def publish(result: SweepResult) -> list[Path]:
    """Store a sweep of :func:`measure_runtimes` straight away (outside a phase: staged in a temporary folder, then
    :func:`store_staged`); a sweep is stored once (again: nothing to do, returns [])."""
    if not result.pending:
        return []
    with tempfile.TemporaryDirectory(prefix=".staging-") as tmp:

        def out(rel: str) -> Path:
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            return Path(tmp) / rel

        stage(result, out)
        store_staged(Path(tmp) / STAGED, result.store)
    result.pending = []
    return result.paths


def store_staged(staged: Path, root: Path) -> list[Path]:
    """Copy a staged tree (:func:`stage`) into the store at ``root``; returns the record files.

    Each record (raw samples first, the record last) is written where it is absent; a file already there with
    the same bytes is left (storing twice changes nothing), one with other bytes is an error -- a measurement
    is never replaced. The machine's profile is written where the store lacks one. Then each machine's
    manifest is rebuilt and its efficiency curves refitted (under its canonical id). One writer at a time
    (``store.write_lock``: two runs storing at once do so in turn, and the last rebuild lists every
    record). All or nothing: on any error the store is put back as it was (:func:`_restored_on_error`)
    before the error propagates.
    """
    files = sorted(
        (p for p in Path(staged).rglob("*") if p.is_file()),
        key=lambda p: (p.name != HARDWARE_PROFILE, p.suffix == ".json", p),
    )
    if not files:  # nothing staged (a notebook of before staging stored its records itself)
        return []
    hardware_ids = sorted({p.relative_to(staged).parts[0] for p in files})
    with write_lock(root), _restored_on_error([Path(root) / h for h in hardware_ids]):
        for source in files:
            target = Path(root) / source.relative_to(staged)
            if target.is_file() and (source.name == HARDWARE_PROFILE or target.read_bytes() == source.read_bytes()):
                continue  # the store's own profile; or this very record, stored before
            if target.exists():
                raise FileExistsError(f"{target} holds another measurement; the store never replaces one")
            atomic.write_bytes(target, source.read_bytes())
        aliases = HardwareAliases.load(root)
        for hardware_id in hardware_ids:
            rebuild_manifest(root, hardware_id)
            write_efficiency_curves(root, aliases.canonical(hardware_id))
    return [Path(root) / p.relative_to(staged) for p in files if p.suffix == ".json" and p.name != HARDWARE_PROFILE]


@contextlib.contextmanager
def _restored_on_error(directories: list[Path]) -> Iterator[None]:
    """On an error in the block, ``directories`` are put back as they were: files and folders that appeared are
    removed, files that changed (manifests, efficiency curves: everything a store write rewrites, which are
    small) get their bytes back. Record files are only ever added, so they are not read beforehand. Used
    under the store's write lock: whatever appeared meanwhile is this writer's."""
    before = {d: set(d.rglob("*")) if d.is_dir() else None for d in directories}  # None: did not exist
    saved = {p: p.read_bytes() for d in directories for p in before[d] or () if p.is_file() and not _is_record_file(p)}
    try:
        yield
    except BaseException:
        for directory, existed in before.items():
            if not directory.is_dir():
                continue
            for path in sorted(directory.rglob("*"), reverse=True):  # children before their folders
                if existed is None or path not in existed:
                    if path.is_dir():
                        path.rmdir()
                    else:
                        path.unlink()
            if existed is None:
                directory.rmdir()
        for path, data in saved.items():
            with contextlib.suppress(OSError):
                if path.read_bytes() != data:
                    atomic.write_bytes(path, data)
        raise


def _is_record_file(path: Path) -> bool:
    return path.parent.parent.name == MEASUREMENTS and path.suffix in (".json", ".npz")


def peak_table(
    records: Sequence[MeasurementRecord], peaks: Mapping[str, dict], estimator: RooflineEstimator | None = None
) -> pd.DataFrame:
    """Per record: images/s, achieved FLOP/s as a fraction of the measured peak of its precision, and the
    roofline estimator's predicted latency and fraction (NaN where the estimator lacks the group)."""
    rows = []
    for record in records:
        measured_ms = end_to_end_ms(record) or record.model_summary.end_to_end_latency.p50
        peak = peaks[record.precision]["flops_per_s"]
        fraction = record.model_summary.total_flops / (measured_ms / 1e3) / peak
        predicted_ms = (
            estimator.predict(record)
            if estimator is not None and group_of(record) in estimator.groups
            else float("nan")
        )
        rows.append(
            {
                "model": record.model,
                "runtime": record.runtime,
                "precision": record.precision,
                "batch_size": record.batch_size,
                "images_per_s": record.batch_size / (measured_ms / 1e3),
                "fraction_of_measured_peak": fraction,
                "roofline_predicted_ms": predicted_ms,
                "roofline_fraction_of_peak": record.model_summary.total_flops / (predicted_ms / 1e3) / peak,
                "measured_ms": measured_ms,
                "peak_by": f"{peaks[record.precision]['by']}, n = {peaks[record.precision].get('n', '?')}",
            }
        )
    return pd.DataFrame(rows)
