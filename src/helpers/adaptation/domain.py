"""The target domain a model is adapted to, written by phase 02a as separate image and label files.

* ``cifar10``: the dataset itself. The CIFAR-10 in ``../shared`` is JPEG re-encoded; the MLPerf
  Tiny ResNet-8 was trained on the original images, so the pipeline's own data *is* the target
  domain. Target train = the pipeline's train split, target test = its test split (val stays
  where phase 01 put it; test is never used for fitting). No source-domain test data exist here
  (the original CIFAR-10 is not in ``../shared``).
* ``digits``: a deterministic corruption of the digits, as in the common-corruption benchmarks
  (Hendrycks & Dietterich 2019): Gaussian noise of standard deviation 0.26 on the [0, 1] pixel
  scale (their ``gaussian_noise`` at severity 4), i.e. ``clip(x + N(0, (0.26 * 255)^2))`` on the
  raw 0-255 pixels, rounded to uint8. The noise is drawn per split from ``default_rng([seed,
  split])``. The model is trained on clean digits (phase 02); the clean test split is the
  source-like test set.

Images and labels are separate files (``target_train_images.npz`` / ``target_train_labels.npz``,
one array each) so that the graph can hand a label-free mode the images alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.data.datasets import Dataset, split_data
from helpers.run import atomic

DIGITS_NOISE_STD = 0.26 * 255.0  # Hendrycks & Dietterich's gaussian_noise, severity 4, on the 0-255 scale
_SPLIT_SEED = {"train": 0, "test": 1}
FILE = "{domain}_{split}_{kind}.npz"  # e.g. target_train_images.npz


def gaussian_noise(images: np.ndarray, std: float, seed: int | list[int]) -> np.ndarray:
    """uint8 images plus seeded Gaussian noise of ``std`` (0-255 scale), clipped and rounded."""
    noise = np.random.default_rng(seed).normal(0.0, std, size=images.shape)
    return np.clip(images.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


@dataclass
class TargetDomain:
    arrays: dict[str, np.ndarray]  # file name -> array (images and labels in separate files)
    record: dict  # what the target domain is, and which sets exist


def target_domain(ds: Dataset, splits: dict, seed: int, with_train: bool) -> TargetDomain:
    """The target-domain sets for ``ds`` (``with_train=False``: no training images, for adaptation=none)."""
    wanted = ("train", "test") if with_train else ("test",)
    parts = {split: split_data(ds, splits, split) for split in wanted}
    arrays: dict[str, np.ndarray] = {}
    if ds.name == "digits":
        for split, (images, labels) in parts.items():
            arrays[FILE.format(domain="target", split=split, kind="images")] = gaussian_noise(
                images, DIGITS_NOISE_STD, [seed, _SPLIT_SEED[split]]
            )
            arrays[FILE.format(domain="target", split=split, kind="labels")] = labels
        arrays[FILE.format(domain="source", split="test", kind="images")] = parts["test"][0]
        arrays[FILE.format(domain="source", split="test", kind="labels")] = parts["test"][1]
        description = (
            f"digits with Gaussian noise, std {DIGITS_NOISE_STD:.2f} on 0-255 (common-corruption "
            "gaussian_noise, severity 4), seeded per split"
        )
        sets = ["source", "target"]
    else:
        for split, (images, labels) in parts.items():
            arrays[FILE.format(domain="target", split=split, kind="images")] = images
            arrays[FILE.format(domain="target", split=split, kind="labels")] = labels
        description = f"{ds.name} as loaded (the JPEG re-encoded CIFAR-10 in ../shared is itself the target domain)"
        sets = ["target"]
    record = {
        "dataset": ds.name,
        "description": description,
        "sets": sets,
        "seed": seed,
        "noise_std": DIGITS_NOISE_STD if ds.name == "digits" else None,
        "sizes": {name: len(a) for name, a in sorted(arrays.items()) if name.endswith("_labels.npz")},
    }
    return TargetDomain(arrays, record)


def save(domain: TargetDomain, out: Callable[[str], Path]) -> None:
    """Write each array to its own declared file (``out`` is ``phase.out``)."""
    for name, array in domain.arrays.items():
        atomic.save_npz(out(name), **{name.rsplit("_", 1)[1].removesuffix(".npz"): array})


def load_array(path: Path) -> np.ndarray:
    """The one array of a file :func:`save` wrote."""
    with np.load(path, allow_pickle=False) as f:
        (key,) = f.files
        return f[key]


def evaluation_sets(read: Callable[[str], Path], sets: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"source"/"target": (test images, test labels)}; ``read`` is ``lambda name: phase.input("02a_target", name)``."""
    return {
        domain: (
            load_array(read(FILE.format(domain=domain, split="test", kind="images"))),
            load_array(read(FILE.format(domain=domain, split="test", kind="labels"))),
        )
        for domain in sets
    }


def samples_figure(clean: np.ndarray, target: np.ndarray, labels: np.ndarray, class_names: list[str], n: int = 10):
    """Two rows: the first test images as they are, and in the target domain."""
    import matplotlib.pyplot as plt

    n = min(n, len(clean))
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for row, (images, title) in enumerate(((clean, "as loaded"), (target, "target"))):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(images[i].squeeze(), cmap="gray" if images.shape[-1] == 1 else None, vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(class_names[int(labels[i])], fontsize=8)
        axes[row, 0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    return fig
