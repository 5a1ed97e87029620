"""Where ground truth lies on disk: the store's folders, the layouts files are found in, and their names.

The store is ``<root>/<hardware_id>/measurements/<precision>/<model key>_b<batch>_r<run>.json`` (schema
v2.0; ``<run>``: the first 8 hex digits of the record's ``run_id``, so a measurement repeated by another
run is kept beside the first, never replaces it) beside ``hardware.json``, ``manifest.json`` and derived
``efficiency_curves/<precision>/``; the root holds ``hardware_aliases.json``. Records are also found in
place in two legacy layouts (``<hw>/<precision>/measurements/<model>.json``,
``<hw>/<precision>/<model>_b<N>.json``). Owns the paths (:func:`record_path`, :func:`samples_path` ...),
the single rule for file names (:func:`stem_parts`), which layout a file is in (:func:`record_layout`)
and what a file that is not a record is (:func:`file_kind`); the one default store is
:func:`default_data_dir`.
"""

from __future__ import annotations

import re
from pathlib import Path

from helpers.ground_truth.records import PRECISIONS, MeasurementRecord, validate_precision
from helpers.run.project import runs_root

STORE_DIR_NAME = "calibration_data"  # the default store's folder in the runs root (:func:`default_data_dir`)
MANIFEST = "manifest.json"
WRITE_LOCK = ".write.lock"  # at the store root: one writer at a time (:func:`write_lock`)
HARDWARE_PROFILE = "hardware.json"
ALIASES = "hardware_aliases.json"
MEASUREMENTS = "measurements"
EFFICIENCY_CURVES = "efficiency_curves"
CANONICAL = "<hw>/measurements/<precision>/<model>_b<N>[_r<run>].json"
LEGACY_PER_MODEL = "<hw>/<precision>/measurements/<model>.json"
LEGACY_BATCH = "<hw>/<precision>/<model>_b<N>.json"
LAYOUTS = (CANONICAL, LEGACY_PER_MODEL, LEGACY_BATCH)  # also the preference among files of one measurement
NON_RECORD_NAMES = {
    MANIFEST: "manifest",
    HARDWARE_PROFILE: "hardware profile",
    ALIASES: "hardware alias table",
    "efficiency_curves.json": "efficiency curves",
    "calibration_metadata.json": "calibration metadata",
    WRITE_LOCK: "store lock",
}
RUN_SUFFIX_DIGITS = 8  # the run id's hex digits in a record's file name (``_r<run>``): one file per repeat


def default_data_dir(runs_root_dir: str | Path | None = None) -> Path:
    """The one default ground-truth store: ``calibration_data/`` in the runs root -- ``runs_root_dir``, else
    ``$CALIB_RUNS_ROOT``, else ``<project>/runs`` (``helpers.run.project.runs_root``); outside a checkout, in the
    cwd. Phase 05 stores there (its ``store_dir`` empty: ``runtime_latency.store_root``, in its run's runs root),
    and ``GroundTruthLoader()``, ``calib ground-truth`` and ``calib ground-truth measure`` read and write there."""
    try:
        root = runs_root(runs_root_dir)
    except RuntimeError:
        root = Path.cwd()
    return root / STORE_DIR_NAME


def measurement_path(
    root: str | Path, hardware_id: str, precision: str, key: str, batch_size: int, run_id: str | None = None
) -> Path:
    """A record's file; with ``run_id`` (every file the project writes) named by its run: one file per repeat."""
    suffix = f"_r{run_id.replace('-', '')[:RUN_SUFFIX_DIGITS]}" if run_id else ""
    precision = validate_precision(precision.lower())
    return Path(root) / hardware_id / MEASUREMENTS / precision / f"{key}_b{batch_size}{suffix}.json"


def record_path(root: str | Path, record: MeasurementRecord) -> Path:
    """Where :func:`save_measurement` puts ``record`` in the store at ``root`` (named by its run: a repeat of its
    configuration by another run lies beside it)."""
    return measurement_path(root, record.hardware_id, record.precision, record.key, record.batch_size, record.run_id)


def samples_path(record_path: str | Path) -> Path:
    """The raw-samples ``.npz`` beside a record file."""
    return Path(record_path).with_suffix(".npz")


def hardware_profile_path(root: str | Path, hardware_id: str) -> Path:
    return Path(root) / hardware_id / HARDWARE_PROFILE


def efficiency_curves_dir(root: str | Path, hardware_id: str, precision: str) -> Path:
    return Path(root) / hardware_id / EFFICIENCY_CURVES / validate_precision(precision.lower())


def stem_parts(stem: str, model_key: str) -> tuple[int | None, str | None]:
    """(batch size, run) a file stem encodes for ``model_key``: None, None for the bare key.

    The single rule for file names (docs/ground_truth.md): ``model_key``, ``model_key_b<N>`` or
    ``model_key_b<N>_r<run>`` (the run id's first 8 hex digits); anything else raises ValueError.
    """
    if stem == model_key:
        return None, None
    match = re.fullmatch(re.escape(model_key) + rf"_b([1-9][0-9]*)(?:_r([0-9a-f]{{{RUN_SUFFIX_DIGITS}}}))?", stem)
    if match is None:
        raise ValueError(
            f"file name {stem!r} does not match its model {model_key!r}: expected "
            f"{model_key}.json, {model_key}_b<batch>.json or {model_key}_b<batch>_r<run>.json; rename the "
            "file or fix its 'model' field"
        )
    return int(match.group(1)), match.group(2)


def split_batch_suffix(stem: str, model_key: str) -> int | None:
    """The batch size a file stem encodes for ``model_key``, or None when the stem is the bare key (:func:`stem_parts`)."""
    return stem_parts(stem, model_key)[0]


def _is_precision(name: str) -> bool:
    return name.lower() in PRECISIONS


def record_layout(parts: tuple[str, ...]) -> str | None:
    """Which layout a JSON file's path relative to its hardware directory is in (None: not a record's place; hidden
    files never are: a writer's ``.tmp-*`` file (``helpers.run.atomic``) is not a record until it is renamed)."""
    if not parts or not parts[-1].endswith(".json") or parts[-1] in NON_RECORD_NAMES or parts[-1].startswith("."):
        return None
    if len(parts) == 3 and parts[0] == MEASUREMENTS and _is_precision(parts[1]):
        return CANONICAL
    if len(parts) == 3 and _is_precision(parts[0]) and parts[1] == MEASUREMENTS:
        return LEGACY_PER_MODEL
    if len(parts) == 2 and _is_precision(parts[0]):
        return LEGACY_BATCH
    return None


def hardware_dir_of(path: Path) -> tuple[Path, str] | None:
    """(hardware directory, layout) of a file in a record's place of any layout, else None."""
    for depth in (3, 2):
        if len(path.parts) > depth:
            hw_dir = Path(*path.parts[:-depth])
            layout = record_layout(path.parts[-depth:])
            if layout is not None:
                return hw_dir, layout
    return None


def file_kind(path: Path) -> str:
    """What a file that is not a measurement record is, by name (``record`` for a record candidate)."""
    if path.name in NON_RECORD_NAMES:
        return NON_RECORD_NAMES[path.name]
    if path.name.startswith(".tmp-"):
        return "unfinished temporary file"
    if EFFICIENCY_CURVES in path.parts[:-1]:
        return "efficiency curves"
    if path.suffix == ".json":
        return "record"
    if path.suffix == ".npz":
        return "raw samples"
    if path.suffix == ".md":
        return "markdown report"
    return f"other file ({path.suffix or 'no suffix'})"


def record_files(hw_dir: Path) -> list[tuple[Path, str]]:
    """Every record candidate of one hardware directory with its layout, canonical layout first."""
    found = []
    for pattern in ("*/*/*.json", "*/*.json"):
        for path in hw_dir.glob(pattern):
            layout = record_layout(path.relative_to(hw_dir).parts)
            if layout is not None and path.is_file():
                found.append((path, layout))
    return sorted(found, key=lambda item: (LAYOUTS.index(item[1]), item[0]))
