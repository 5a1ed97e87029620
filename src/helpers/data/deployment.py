"""The domain a run deploys to, and the data every phase after adaptation works on.

A run deploys to one named domain, which phase 02a decides and records (``target.json`` and its
manifest summary, ``deployment``): the **target** whenever the run adapts (``adaptation`` is not
``none``), else the **source** -- the data as phase 01 split it. Each domain offers the same sets:

=============== ============================================= ==========================================
set             source (phase 01's files)                      target (phase 02a's files)
=============== ============================================= ==========================================
``calibration`` the PTQ slice (``calibration_slice.npz``,       the same images in the target domain
                stratified from the train split)               (``target_calibration_*.npz``)
``val``         ``splits.npz``' val                            ``target_val_*.npz``
``test``        ``splits.npz``' test                           ``target_test_*.npz``
=============== ============================================= ==========================================

The target sets are the source sets carried into the target domain image by image (``helpers.adaptation
.domain``), so they are disjoint exactly as phase 01's splits are: adaptation fits on the target train
images, choices and fits are made on val, figures are reported on test. Phases 03 (activation statistics),
04 (PTQ slice, INT8 choice, INT8 accuracy), 06 (maps), 07 (threshold and conformal rules) and 08 (bundle
validation) read their data only through :func:`open_deployment`; :func:`open_run_deployment` reads a finished
run's (tests, benchmarks, analyses outside a phase).

This module also owns the two file formats these sets travel in: phase 01's calibration slice (indices
into the training images, :func:`load_calibration_slice`) and one array per file for phase 02a's domain
sets (:data:`FILE`, :func:`save_array` / :func:`load_array`), images and labels apart so that the graph
can hand a label-free adaptation the images alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.data.datasets import Dataset, check_indices, load_splits, slice_hash, split_data
from helpers.run import atomic, manifest

DOMAINS = ("source", "target")
SETS = ("calibration", "val", "test")
FILE = "{domain}_{split}_{kind}.npz"  # phase 02a's sets, e.g. target_val_images.npz
SLICE_KEYS = ("indices", "labels")


def save_array(path: Path, array: np.ndarray) -> None:
    """One array in its own npz, under the key its file name ends with (``..._images.npz`` -> ``images``)."""
    atomic.save_npz(path, **{Path(path).name.rsplit("_", 1)[1].removesuffix(".npz"): array})


def load_array(path: Path) -> np.ndarray:
    """The one array of a file :func:`save_array` wrote."""
    with np.load(path, allow_pickle=False) as f:
        (key,) = f.files
        return f[key]


def load_calibration_slice(
    path: str | Path, train_images: np.ndarray, train_labels: np.ndarray, expected_hash: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 images, int64 labels)`` of the slice phase 01 stored as ``indices`` into the training images.

    Checks the file, its keys, that the indices fit ``train_images``, that the stored labels are the
    dataset's labels at those indices and, given ``expected_hash`` (distribution.json's ``slice_hash``),
    that the slice is the one phase 01 drew. (What the images must look like is the calibration guard's
    check, ``helpers.quantize.guard.check_calibration_slice``.)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"calibration slice {path} does not exist; run phase 01_data first "
            "(it writes results/01_data/calibration_slice.npz)"
        )
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in SLICE_KEYS if k not in npz.files]
        if missing:
            raise ValueError(
                f"{path} lacks {', '.join(missing)}; it holds {sorted(npz.files)} "
                f"and a calibration slice needs {', '.join(SLICE_KEYS)}"
            )
        indices, labels = npz["indices"], npz["labels"]
    check_indices(
        indices, len(train_images), str(path), "the slice was drawn from another dataset than this training set"
    )
    if len(indices) != len(labels):
        raise ValueError(f"{path}: {len(indices)} indices but {len(labels)} labels; a slice holds one label per index")
    if not np.array_equal(labels, np.asarray(train_labels)[indices]):
        raise ValueError(
            f"{path}: the stored labels differ from the dataset's labels at the slice indices; "
            "the slice was drawn from another dataset -- rerun phase 01_data"
        )
    if expected_hash is not None and slice_hash(indices, train_images) != expected_hash:
        raise ValueError(
            f"{path}: slice hash differs from {expected_hash[:12]}... (distribution.json); the images "
            "at these indices are not the ones phase 01 chose -- load the same dataset"
        )
    return train_images[indices], labels.astype(np.int64)


@dataclass(frozen=True)
class Deployment:
    """The deployment domain's sets, read on demand (``open_deployment``)."""

    domain: str  # "source" or "target"
    description: str  # what the domain is, in words (02a's record)
    read: Callable[[str, str], Path]  # (phase id, file) -> a verified path: ``Phase.input``
    ds: Dataset
    slice_hash: str | None = None  # phase 01's slice hash: the source slice's images are the ones it drew

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images, int64 labels) of ``name``: "calibration", "val" or "test"."""
        if self.domain == "target":
            return self._target(name, "images"), self.labels(name)
        if self._check(name) == "calibration":
            path = self.read("01_data", "calibration_slice.npz")
            return load_calibration_slice(path, self.ds.train_images, self.ds.train_labels, self.slice_hash)
        images, labels = split_data(self.ds, load_splits(self.read("01_data", "splits.npz"), self.ds), name)
        return images, labels.astype(np.int64)

    def labels(self, name: str) -> np.ndarray:
        """The int64 labels of ``name`` alone (no image file is read)."""
        if self.domain == "target":
            return self._target(name, "labels").astype(np.int64)
        return self.split(name)[1]  # the source's images are the dataset's, in memory already

    def eval_splits(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``({"val": x, "test": x}, {"val": y, "test": y})`` of the deployment domain."""
        pairs = {name: self.split(name) for name in ("val", "test")}
        return {name: x for name, (x, _) in pairs.items()}, {name: y for name, (_, y) in pairs.items()}

    def eval_labels(self) -> dict[str, np.ndarray]:
        """``{"val": y, "test": y}`` of the deployment domain, without reading its images."""
        return {name: self.labels(name) for name in ("val", "test")}

    def _check(self, name: str) -> str:
        if name not in SETS:
            raise ValueError(f"the deployment domain has the sets {', '.join(SETS)}, not {name!r}")
        return name

    def _target(self, name: str, kind: str) -> np.ndarray:
        return load_array(self.read("02a_target", FILE.format(domain="target", split=self._check(name), kind=kind)))

    def headline(self) -> str:
        """``target domain (digits with Gaussian noise ...)`` -- what tables and the console say."""
        return f"{self.domain} domain ({self.description})"


def open_deployment(phase, ds: Dataset) -> Deployment:
    """The deployment domain phase 02a recorded, for a phase that declares 01_data and 02a_target upstream.

    ``phase`` is a *reader* of upstream files, the one protocol a helper may take instead of plain values (see
    ``helpers.run.phase``): anything with ``input(phase_id, name) -> path`` and ``upstream_summary(phase_id) ->
    dict``, as ``Phase`` is and :func:`open_run_deployment`'s reader of a finished run is."""
    target = phase.upstream_summary("02a_target")
    domain = target.get("deployment")
    if domain not in DOMAINS:
        raise ValueError(
            f"phase 02a_target recorded no deployment domain (got {domain!r}); it was run by an older "
            "version: re-run it (calib run --phases 02a and what follows)"
        )
    source_hash = phase.upstream_summary("01_data").get("slice_hash")
    return Deployment(domain, target["deployment_description"], phase.input, ds, source_hash)


class _RunFiles:
    """A finished run's results as a phase reads them: declared files by path, summaries from the manifests."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def input(self, phase_id: str, name: str) -> Path:
        return manifest.results_dir(self.run_dir, phase_id) / name

    def upstream_summary(self, phase_id: str) -> dict:
        return (manifest.read_manifest(self.run_dir, phase_id) or {}).get("summary", {})


def open_run_deployment(run_dir: Path, ds: Dataset) -> Deployment:
    """The deployment domain of the run in ``run_dir`` (its phases 01 and 02a complete), read from its files."""
    return open_deployment(_RunFiles(run_dir), ds)
