"""Datasets, the one preprocessing function, splits and the stratified calibration slice.

Owns everything between raw pixels and model inputs:

* dataset adapters -- ``digits`` (scikit-learn's bundled 8x8 digits, the embedded default, no
  download) and ``cifar10`` (a standard ``cifar-10-batches-py`` folder the user points at);
  both give uint8 NHWC images and int64 labels;
* ``preprocess`` -- uint8 NHWC -> float32 NHWC in raw 0-255. No division, no normalization:
  any scaling a model wants happens inside the model. Every consumer (evaluation, training,
  activation statistics, quantization calibration, the bundle) calls this one function;
* deterministic splits (train / val / test) and the stratified calibration slice drawn from the
  train split only, with its slice hash.

Run ``python -m helpers.data --dataset cifar10 --data-dir DIR --samples-per-class 100`` for a
quick look at the calibration slice.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.run.params import typed_config

DATASETS = ("digits", "cifar10")
VAL_SOURCES = ("train", "test")
DEFAULT_SAMPLES_PER_CLASS = {"digits": 20, "cifar10": 100}
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
MIN_VAL_PER_BIN = 10  # val images per confidence bin below which phase 06 is refused (a 15-bin ECE on 126
# images has a null band of several points: no map can be told from the identity)
DIGITS_TEST_FRACTION = 0.3  # digits ships no test split: a fixed stratified 30% (seed 0) is ours
_SHAPES = {"digits": (8, 8, 1), "cifar10": (32, 32, 3)}


@dataclass(frozen=True)
class Dataset:
    """uint8 NHWC images with int64 labels; ``test`` is the dataset's own held-out split."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images -> float32 NHWC, raw 0-255 (the project's single input contract)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(
            f"preprocess expects uint8 images, got {images.dtype}; pass raw pixels, not already-scaled floats"
        )
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"preprocess expects NHWC images (N, H, W, 1|3), got shape {images.shape}")
    return images.astype(np.float32)


def check_image_batch(images, what: str = "images", shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """The input contract's one check: a non-empty uint8 NHWC array of raw pixels, with per-sample ``shape``
    when given (None entries are free). Returns the array; a ValueError says what came and what is expected."""
    images = np.asarray(images)
    dims = "N, H, W, C" if shape is None else ", ".join(["N", *("?" if d is None else str(d) for d in shape)])
    contract = f"uint8 NHWC images of shape ({dims}) with raw pixels 0-255 (scaling happens inside the model)"
    got = f"got {images.dtype} {images.shape}"
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{what} takes {contract}; {got}")
    if len(images) == 0:
        raise ValueError(f"{what} takes {contract}; the batch is empty ({got}): pass at least one image")
    if shape is not None and any(e is not None and e != s for e, s in zip(shape, images.shape[1:])):
        raise ValueError(
            f"{what} takes {contract}; {got}: per-sample shape {images.shape[1:]}, the model expects ({dims[3:]})"
        )
    return images


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load ``digits`` (built in) or ``cifar10`` (``data_dir`` = a cifar-10-batches-py folder)."""
    if name == "digits":
        return _load_digits()
    if name == "cifar10":
        if not data_dir:
            raise ValueError(
                "dataset 'cifar10' needs data_dir: the path of a cifar-10-batches-py folder "
                "(build one with: python ../shared/data/make_cifar10_batches.py --out DIR)"
            )
        return _load_cifar10(Path(data_dir))
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


@dataclass(frozen=True)
class DataConfig:
    """Phase 01's typed config (``phase.config``), validated when built: the dataset and how it is split."""

    dataset: str = "digits"
    data_dir: str = ""
    val_source: str = "train"
    val_fraction: float = 0.3
    samples_per_class: int = 0  # 0: the dataset's DEFAULT_SAMPLES_PER_CLASS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.dataset == "cifar10":
            if not self.data_dir:
                raise ValueError("dataset cifar10 needs data_dir (a cifar-10-batches-py folder): -p data_dir=DIR")
            check_cifar10_dir(Path(self.data_dir))
        if self.val_source not in VAL_SOURCES:
            raise ValueError(f"val_source must be one of {', '.join(VAL_SOURCES)}, got {self.val_source!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.samples_per_class < 0:
            raise ValueError(
                f"samples_per_class must be >= 1 (or 0 for the dataset default), got {self.samples_per_class}"
            )

    @property
    def per_class(self) -> int:
        """The calibration slice's images per class."""
        return self.samples_per_class or DEFAULT_SAMPLES_PER_CLASS[self.dataset]

    def load(self) -> Dataset:
        return load_dataset(self.dataset, self.data_dir or None)

    def splits(self, ds: Dataset) -> dict[str, np.ndarray]:
        """Phase 01's splits and calibration slice of ``ds`` (:func:`make_splits`)."""
        return make_splits(ds, self.val_fraction, self.per_class, self.seed, self.val_source)


def check_params(params: dict, config: dict | None = None) -> DataConfig:
    """Phase 01's precheck: its typed config; with ``config`` (``calib run``, before any run directory exists) the
    dataset is also loaded and the splits drawn, as the kernel would."""
    typed = typed_config(DataConfig, params)
    if config is None:  # in the kernel (Phase.open): its next cell loads the dataset anyway
        return typed
    # the kernel's own first steps, so what would fail in phase 01 fails here, before any run directory exists:
    # every batch is read (a truncated one or an unsafe pickle is refused) and the slice must fit every class
    splits = typed.splits(typed.load())
    n_bins = config.get("06_confidence", {}).get("n_bins")
    if n_bins is not None and len(splits["val"]) < MIN_VAL_PER_BIN * n_bins:
        raise ValueError(
            f"val holds {len(splits['val'])} images (val_fraction {typed.val_fraction} of the {typed.val_source} "
            f"data), too few for phase 06's {n_bins} confidence bins: calibration needs at least {MIN_VAL_PER_BIN} "
            f"images per bin ({MIN_VAL_PER_BIN * n_bins}); raise val_fraction (digits: 0.3 gives 378) or lower "
            "06_confidence.n_bins"
        )
    return typed


def check_cifar10_dir(data_dir: Path) -> None:
    """Fail fast (before any work) when ``data_dir`` is not a cifar-10-batches-py folder."""
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 data_dir {data_dir} does not exist; point data_dir at a "
            "cifar-10-batches-py folder (python ../shared/data/make_cifar10_batches.py --out DIR builds one)"
        )
    missing = [f for f in CIFAR_FILES if not (data_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 data_dir {data_dir} is missing {', '.join(missing)}; "
            "it must hold data_batch_1..5, test_batch and batches.meta"
        )


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=0
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return Dataset(
        "digits", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], [str(i) for i in range(10)]
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: numpy arrays and plain containers, nothing executable."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except Exception as exc:  # truncated, corrupt, or not a pickle at all
        raise ValueError(
            f"{path} is not a readable CIFAR-10 batch ({type(exc).__name__}: {exc}); "
            "rebuild the folder with make_cifar10_batches.py"
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a CIFAR-10 batch dict")
    return obj


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path} lacks 'data'/'labels'; keys are {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(
            f"{path}: data must be uint8 (N, 3072) with N labels, got {data.dtype} {data.shape} "
            f"and {len(labels)} labels"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_cifar10(data_dir: Path) -> Dataset:
    check_cifar10_dir(data_dir)
    train = [_cifar_batch(data_dir / f"data_batch_{i}") for i in range(1, 6)]
    test_images, test_labels = _cifar_batch(data_dir / "test_batch")
    meta = _unpickle(data_dir / "batches.meta")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
    if len(names) != 10:
        raise ValueError(f"{data_dir / 'batches.meta'} must list 10 label_names, found {len(names)}")
    return Dataset(
        "cifar10",
        np.ascontiguousarray(np.concatenate([t[0] for t in train])),
        np.concatenate([t[1] for t in train]),
        np.ascontiguousarray(test_images),
        test_labels,
        names,
    )


def check_images(images: np.ndarray, dataset: str) -> None:
    """Shape/dtype check for a dataset's images (an adapter bug or a wrong folder shows here)."""
    expected = _SHAPES[dataset]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(
            f"{dataset} images must be uint8 (N, {', '.join(map(str, expected))}), got {images.dtype} {images.shape}"
        )


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of the training indices into (train, val), each sorted."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train_idx), np.sort(val_idx)


def stratified_slice(
    labels: np.ndarray, samples_per_class: int, seed: int, class_names: list[str] | None = None
) -> np.ndarray:
    """Exactly ``samples_per_class`` indices per class (into ``labels``), seeded, sorted."""
    if samples_per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
    rng = np.random.default_rng(seed)
    num_classes = len(class_names) if class_names else int(labels.max()) + 1
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < samples_per_class:
            name = class_names[c] if class_names else c
            raise ValueError(
                f"samples_per_class={samples_per_class} but class {name!r} has only {len(members)} "
                f"training samples; lower samples_per_class to at most {len(members)}"
            )
        chosen.append(rng.choice(members, size=samples_per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def make_splits(
    ds: Dataset, val_fraction: float, samples_per_class: int, seed: int, val_source: str = "train"
) -> dict[str, np.ndarray]:
    """Indices of train / val / test and the calibration slice (into the training images).

    ``val_source="train"``: val is a stratified ``val_fraction`` of the training data. ``"test"``:
    val is a stratified ``val_fraction`` of the test split and test is the rest -- for a model
    trained on every training image (the MLPerf pretrained ResNet-8), whose temperature and
    threshold must not be fitted on images it was trained on. The slice is drawn from the train
    split only -- never val, never test. Read a split's images with :func:`split_data`.
    """
    if val_source not in VAL_SOURCES:
        raise ValueError(f"val_source must be one of {', '.join(VAL_SOURCES)}, got {val_source!r}")
    test_idx = np.arange(len(ds.test_labels))
    if val_source == "train":
        train_idx, val_idx = split_train_val(ds.train_labels, val_fraction, seed)
    else:
        train_idx = np.arange(len(ds.train_labels))
        test_idx, val_idx = split_train_val(ds.test_labels, val_fraction, seed)
    calibration = train_idx[stratified_slice(ds.train_labels[train_idx], samples_per_class, seed, ds.class_names)]
    return {
        "train": train_idx,
        "val": val_idx,
        "test": test_idx,
        "calibration": calibration,
        "val_source": np.array(val_source),
    }


def split_data(ds: Dataset, splits: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of split ``name`` ("train", "val", "test" or "calibration")."""
    from_test = name == "test" or (name == "val" and str(splits.get("val_source", "train")) == "test")
    images, labels = (ds.test_images, ds.test_labels) if from_test else (ds.train_images, ds.train_labels)
    return images[splits[name]], labels[splits[name]]


def eval_splits(ds: Dataset, splits: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Images and labels of the val and test splits: ``({"val": x, "test": x}, {"val": y, "test": y})``."""
    pairs = {name: split_data(ds, splits, name) for name in ("val", "test")}
    return {name: x for name, (x, _) in pairs.items()}, {name: y for name, (_, y) in pairs.items()}


def check_indices(indices: np.ndarray, size: int, where: str, hint: str) -> np.ndarray:
    """``indices`` as a 1-D integer array within ``[0, size)``; else a ValueError naming ``where``, what is
    wrong, and ``hint`` (how to fix it). The one bounds check of split, slice and calibration indices."""
    indices = np.asarray(indices)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{where}: indices must be a 1-D integer array, got {indices.dtype} {indices.shape}; {hint}")
    if len(indices) and (indices.min() < 0 or indices.max() >= size):
        raise ValueError(f"{where}: indices span {indices.min()}..{indices.max()} but there are {size} images; {hint}")
    return indices


def load_splits(splits_path: Path, ds: Dataset) -> dict[str, np.ndarray]:
    """Phase 01's split indices, checked against the dataset they index."""
    with np.load(splits_path) as f:
        splits = {name: f[name] for name in ("train", "val", "test")}
        splits["val_source"] = str(f["val_source"]) if "val_source" in f.files else "train"
    val_limit = len(ds.test_labels) if splits["val_source"] == "test" else len(ds.train_labels)
    limits = {"train": len(ds.train_labels), "val": val_limit, "test": len(ds.test_labels)}
    for name, limit in limits.items():
        hint = f"phase 01 ran on another dataset than {ds.name}; re-run it with the same dataset/data_dir"
        check_indices(splits[name], limit, f"{splits_path} ({name})", hint)
    return splits


def split_table(ds: Dataset, splits: dict[str, np.ndarray]):
    """Per-class counts of every split (rows: classes + total)."""
    import pandas as pd

    names = ("train", "val", "test", "calibration")
    table = pd.DataFrame({name: class_counts(split_data(ds, splits, name)[1], ds.class_names) for name in names})
    table.loc["total"] = table.sum()
    return table


def slice_hash(indices: np.ndarray, images: np.ndarray) -> str:
    """sha256 over the chosen indices (int64 little-endian) and their pixel bytes, in order."""
    h = hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(images[indices]).tobytes())
    return h.hexdigest()


def class_counts(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    """Class name -> count, in class order."""
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(n) for name, n in zip(class_names, counts)}


def verify_distribution(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    """Print the per-class table of ``labels`` (count and share) and return class name -> count.

    The calibration-data API of the PTQ design this project follows; a class with no sample is named.
    """
    counts = class_counts(labels, class_names)
    total = max(sum(counts.values()), 1)
    print(f"{'class':<12} {'count':>6} {'share':>7}")
    for name, count in counts.items():
        print(f"{name:<12} {count:>6} {100 * count / total:>6.1f}%")
    empty = [name for name, count in counts.items() if count == 0]
    print(f"{'total':<12} {total:>6}" + (f"   no sample of: {', '.join(empty)}" if empty else ""))
    return counts


def load_calibration_data(
    data_dir: str | Path, samples_per_class: int = 100, seed: int = 0, dataset: str = "cifar10"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels, class_names) for post-training-quantization calibration: ``samples_per_class`` images
    of every class, stratified and seeded from the TRAINING batches (never test), as the model sees them --
    ``preprocess``ed: float32 NHWC, raw 0-255. The calibration-data API of the PTQ design this project follows;
    phase 01 draws its slice with the same ``stratified_slice``."""
    ds = load_dataset(dataset, data_dir)
    chosen = stratified_slice(ds.train_labels, samples_per_class, seed, ds.class_names)
    return preprocess(ds.train_images[chosen]), ds.train_labels[chosen], list(ds.class_names)


def describe_inputs(images: np.ndarray) -> dict:
    """dtype, shape and pixel range of preprocessed inputs, and the NHWC check."""
    x = preprocess(images)
    return {
        "dtype": str(x.dtype),
        "shape": list(x.shape),
        "min": float(x.min()),
        "max": float(x.max()),
        "layout": "NHWC",
        "nhwc_confirmed": bool(x.shape[-1] in (1, 3)),
    }


def slice_record(ds: Dataset, splits: dict, samples_per_class: int) -> dict:
    """What ``distribution.json`` holds: class counts of the slice, its hash and its input description."""
    calibration = splits["calibration"]
    return {
        "dataset": ds.name,
        "class_names": ds.class_names,
        "samples_per_class": samples_per_class,
        "distribution": class_counts(ds.train_labels[calibration], ds.class_names),
        "slice_hash": slice_hash(calibration, ds.train_images),
        "inputs": describe_inputs(ds.train_images[calibration]),
    }


def print_slice_summary(record: dict) -> None:
    """The calibration slice at a glance: size, per-class counts, dtype/shape/range, layout, hash."""
    inputs = record["inputs"]
    print(f"Loaded {sum(record['distribution'].values())} calibration samples")
    for name, count in record["distribution"].items():
        print(f"  {name:<12} {count:>5}")
    print(
        f"dtype: {inputs['dtype']}  shape: {tuple(inputs['shape'])}  pixel range: [{inputs['min']:.0f}, {inputs['max']:.0f}]"
    )
    print("NHWC format confirmed" if inputs["nhwc_confirmed"] else "NOT NHWC: the model input contract is broken")
    print(f"slice hash: {record['slice_hash']}")


def sample_grid_figure(images: np.ndarray, labels: np.ndarray, class_names: list[str], per_class: int = 8):
    """A grid: one row per class, ``per_class`` example images each."""
    import matplotlib.pyplot as plt

    rows = len(class_names)
    fig, axes = plt.subplots(rows, per_class, figsize=(per_class * 0.9, rows * 0.95), squeeze=False)
    for c, name in enumerate(class_names):
        members = np.flatnonzero(labels == c)[:per_class]
        for j, ax in enumerate(axes[c]):
            ax.axis("off")
            if j < len(members):
                img = images[members[j]]
                ax.imshow(
                    img[..., 0] if img.shape[-1] == 1 else img,
                    cmap="gray" if img.shape[-1] == 1 else None,
                    vmin=0,
                    vmax=255,
                    interpolation="nearest",
                )
        axes[c][0].set_title(name, fontsize=8, loc="left")
    fig.suptitle("Calibration slice: examples per class")
    return fig


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description="Inspect the calibration slice.")
    parser.add_argument(
        "--dataset", choices=DATASETS, default=None, help="default: cifar10 when --data-dir is given, else digits"
    )
    parser.add_argument("--data-dir", default=None, help="cifar-10-batches-py folder")
    parser.add_argument("--samples-per-class", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    name = args.dataset or ("cifar10" if args.data_dir else "digits")
    per_class = args.samples_per_class or DEFAULT_SAMPLES_PER_CLASS[name]
    try:
        ds = load_dataset(name, args.data_dir)
        splits = make_splits(ds, args.val_fraction, per_class, args.seed)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print_slice_summary(slice_record(ds, splits, per_class))
    return 0
