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

Phase 02a writes every set of the domains it describes through ``helpers.data.deployment``'s files (images
and labels apart, so that the graph can hand a label-free mode the images alone): the target's val and test
sets always; with adaptation, its train images (what adaptation fits on) and its calibration slice (phase
01's PTQ slice carried into the target domain: the same images, so the same stratification, drawn from the
train split); for digits, the source's val and test sets beside them. Target val is what phases 04-07 fit
and choose on when the run deploys to the target; it never reaches adaptation (the graph gives 02b val and
test files only once its model is sealed). ``record["deployment"]`` names the domain the run deploys to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpers.adaptation.methods import AdaptConfig
from helpers.data.datasets import Dataset, split_data
from helpers.data.deployment import FILE, Deployment, load_array, save_array

DIGITS_NOISE_STD = 0.26 * 255.0  # Hendrycks & Dietterich's gaussian_noise, severity 4, on the 0-255 scale
_SPLIT_SEED = {"train": 0, "test": 1, "val": 2}  # the noise of a split; calibration reuses train's


def gaussian_noise(images: np.ndarray, std: float, seed: int | list[int]) -> np.ndarray:
    """uint8 images plus seeded Gaussian noise of ``std`` (0-255 scale), clipped and rounded."""
    noise = np.random.default_rng(seed).normal(0.0, std, size=images.shape)
    return np.clip(images.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


@dataclass(frozen=True)
class TargetConfig:
    """Phase 02a's typed config (``phase.config``): phase 02b's mode, which decides what 02a writes."""

    adaptation: str

    def __post_init__(self) -> None:
        AdaptConfig(self.adaptation)  # an unknown mode is refused as 02b refuses it

    @property
    def with_train(self) -> bool:
        """Whether 02b fits on target train images (and so the run deploys to the target)."""
        return AdaptConfig(self.adaptation).fits


def check_params(params: dict, config: dict | None = None) -> TargetConfig:
    """Phase 02a's precheck: its typed config."""
    return TargetConfig(params["adaptation"])


@dataclass
class TargetDomain:
    arrays: dict[str, np.ndarray]  # file name -> array (images and labels in separate files)
    record: dict  # what the target domain is, which sets exist, and the domain the run deploys to


def target_domain(ds: Dataset, splits: dict, seed: int, with_train: bool) -> TargetDomain:
    """The domain sets for ``ds``; ``with_train`` (the run adapts): also the target train images and
    calibration slice, and the run deploys to the target (else to the source)."""
    wanted = ("train", "val", "test") if with_train else ("val", "test")
    parts = {split: split_data(ds, splits, split) for split in wanted}
    if ds.name == "digits":
        target = {
            split: gaussian_noise(images, DIGITS_NOISE_STD, [seed, _SPLIT_SEED[split]])
            for split, (images, _) in parts.items()
        }
        description = (
            f"digits with Gaussian noise, std {DIGITS_NOISE_STD:.2f} on 0-255 (common-corruption "
            "gaussian_noise, severity 4), seeded per split"
        )
        source_description = "clean digits, as loaded"
        sets = ["source", "target"]
    else:
        target = {split: images for split, (images, _) in parts.items()}
        description = f"{ds.name} as loaded (the JPEG re-encoded CIFAR-10 in ../shared is itself the target domain)"
        source_description = f"{ds.name} as loaded"
        sets = ["target"]
    arrays: dict[str, np.ndarray] = {}
    for split, (_, labels) in parts.items():
        arrays[FILE.format(domain="target", split=split, kind="images")] = target[split]
        arrays[FILE.format(domain="target", split=split, kind="labels")] = labels
        if "source" in sets and split != "train":
            arrays[FILE.format(domain="source", split=split, kind="images")] = parts[split][0]
            arrays[FILE.format(domain="source", split=split, kind="labels")] = labels
    if with_train:  # phase 01's slice: indices into the training images, all within the train split
        train, calibration = np.asarray(splits["train"]), np.asarray(splits["calibration"])
        positions = np.searchsorted(train, calibration)
        if positions.max(initial=0) >= len(train) or not np.array_equal(train[positions], calibration):
            raise ValueError("the calibration slice is not drawn from the train split; re-run phase 01_data")
        arrays[FILE.format(domain="target", split="calibration", kind="images")] = target["train"][positions]
        arrays[FILE.format(domain="target", split="calibration", kind="labels")] = parts["train"][1][positions]
    deployment = "target" if with_train else "source"
    record = {
        "dataset": ds.name,
        "description": description,
        "sets": sets,
        "seed": seed,
        "noise_std": DIGITS_NOISE_STD if ds.name == "digits" else None,
        "sizes": {name: len(a) for name, a in sorted(arrays.items()) if name.endswith("_labels.npz")},
        "deployment": deployment,
        "deployment_description": description if with_train else source_description,
    }
    return TargetDomain(arrays, record)


def save(domain: TargetDomain, out) -> None:
    """Write each array to its own declared file (``out`` is ``phase.out``)."""
    for name, array in domain.arrays.items():
        save_array(out(name), array)


def evaluation_sets(read, sets: list[str]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{"source"/"target": {"val"/"test": (images, labels)}}``; ``read`` is ``lambda name:
    phase.input("02a_target", name)``."""
    return {
        domain: {
            split: (
                load_array(read(FILE.format(domain=domain, split=split, kind="images"))),
                load_array(read(FILE.format(domain=domain, split=split, kind="labels"))),
            )
            for split in ("val", "test")
        }
        for domain in sets
    }


def deployment_images(
    sets: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], deployed: Deployment
) -> dict[str, np.ndarray]:
    """The deployment domain's ``{"val", "test"}`` images: taken from :func:`evaluation_sets` when they hold that
    domain (the same files and arrays, read once), else read through ``deployed``."""
    if deployed.domain in sets:
        return {split: sets[deployed.domain][split][0] for split in ("val", "test")}
    return deployed.eval_splits()[0]


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
