"""The trained-model artifact that phase 02 hands to every later phase.

Two files: ``model.json`` (the architecture spec: registry name, classes, NHWC input shape and
the keyword arguments that rebuild it, e.g. the input scale of an imported Keras model) and
``model.pt`` (the state dict, loaded with ``weights_only=True``). ``load`` rebuilds the
architecture from the spec and loads the weights, so a checkpoint can never be paired with the
wrong architecture silently.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from helpers.models.architectures import build_model
from helpers.models.training import PRECISIONS, epoch_logger, load_checkpoint, save_checkpoint, train
from helpers.run import atomic
from helpers.run.params import typed_config

DEFAULT_ARCHITECTURE = {"digits": "digits_cnn", "cifar10": "resnet8"}
SOURCES = ("train", "keras_h5")
RECIPE = ("epochs", "batch_size", "lr", "seed", "augment", "label_smoothing", "precision")  # TrainConfig -> train()
log = logging.getLogger(__name__)  # the training's wall time goes to the phase's log (helpers.run.phase)


@dataclass(frozen=True)
class TrainConfig:
    """Phase 02's typed config (``phase.config``), validated when built: where the model comes from and its recipe."""

    dataset: str
    model_source: str = "train"
    h5_path: str = ""
    val_source: str = "train"
    architecture: str = ""  # empty: the dataset's DEFAULT_ARCHITECTURE
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.1
    seed: int = 0
    augment: bool = False
    label_smoothing: float = 0.0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        from helpers.models.architectures import available_models

        if self.model_source not in SOURCES:
            raise ValueError(f"model_source must be one of {', '.join(SOURCES)}, got {self.model_source!r}")
        if self.model_source == "keras_h5":
            self._check_keras_h5()
        if self.architecture and self.architecture not in available_models():
            raise ValueError(
                f"unknown architecture {self.architecture!r}; choose one of {', '.join(available_models())}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be {' or '.join(PRECISIONS)}, got {self.precision!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:  # `not >`: NaN fails too
            raise ValueError(
                f"need epochs >= 1, batch_size >= 1 and lr > 0; got epochs={self.epochs}, "
                f"batch_size={self.batch_size}, lr={self.lr}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def recipe(self) -> dict:
        """The training's keyword arguments (``helpers.models.training.train``), named as its parameters are."""
        return {name: getattr(self, name) for name in RECIPE}

    def _check_keras_h5(self) -> None:
        if not self.h5_path or not Path(self.h5_path).is_file():
            raise FileNotFoundError(
                f"model_source keras_h5 needs h5_path to be an existing .h5 file, got "
                f"{self.h5_path!r} (e.g. -p h5_path=../shared/models/mlperf_tiny_resnet8_pretrained.h5)"
            )
        from helpers.models.keras_import import check_resnet8_file

        try:  # what phase 02 reads first: an HDF5 file holding a Keras ResNet-8 (its weights are read there)
            check_resnet8_file(self.h5_path)
        except ValueError as exc:
            raise ValueError(f"h5_path: {exc}") from None
        if self.dataset != "cifar10":
            raise ValueError("the MLPerf Tiny ResNet-8 .h5 is a CIFAR-10 model: use -p dataset=cifar10 with keras_h5")
        if self.val_source != "test":
            raise ValueError(
                "the MLPerf Tiny ResNet-8 .h5 was trained on every CIFAR-10 training image, so a val split "
                "from the training data would fit temperature and threshold on images it has seen: add "
                "-p val_source=test -p val_fraction=0.5 (val = half of the test split)"
            )


def check_params(params: dict, config: dict | None = None) -> TrainConfig:
    """Phase 02's precheck: its typed config (``calib run`` builds it before any kernel starts)."""
    return typed_config(TrainConfig, params)


def obtain(config: TrainConfig, ds, train_xy, val_xy) -> tuple[nn.Module, dict, dict | None]:
    """Phase 02's model: imported from the Keras h5 (``model_source="keras_h5"``) or built and trained here.
    Returns ``(model, spec, history)``; ``history`` is None for an import (nothing was trained)."""
    if config.model_source == "keras_h5":
        from helpers.models.keras_import import import_resnet8

        model, imported = import_resnet8(config.h5_path)
        model_spec = spec(
            "resnet8",
            imported["num_classes"],
            ds.train_images.shape[1:],
            widths=imported["widths"],
            bn_eps=imported["bn_eps"],
            input_scale=imported["input_scale"],
        )
        return model, model_spec, None
    model_spec = spec(
        config.architecture or DEFAULT_ARCHITECTURE[config.dataset], ds.num_classes, ds.train_images.shape[1:]
    )
    start = time.perf_counter()
    model, history = train(
        build(model_spec), *train_xy, *val_xy, **config.recipe(), on_epoch_end=epoch_logger(config.epochs)
    )
    log.info("timing", extra={"fields": {"name": "training", "seconds": round(time.perf_counter() - start, 4)}})
    return model, model_spec, history


def spec(name: str, num_classes: int, input_shape: tuple[int, int, int], **kwargs) -> dict:
    return {
        "name": name,
        "num_classes": int(num_classes),
        "input_shape": [int(s) for s in input_shape],
        "kwargs": kwargs,
    }


def build(model_spec: dict) -> nn.Module:
    return build_model(
        model_spec["name"], model_spec["num_classes"], tuple(model_spec["input_shape"]), **model_spec.get("kwargs", {})
    )


def save(model: nn.Module, model_spec: dict, spec_path: Path, checkpoint_path: Path) -> None:
    atomic.write_json(spec_path, model_spec)
    save_checkpoint(model, checkpoint_path)


def load(spec_path: Path, checkpoint_path: Path) -> tuple[nn.Module, dict]:
    """Rebuild the architecture from ``model.json`` and load ``model.pt`` into it (eval mode)."""
    model_spec = atomic.read_json(spec_path, "the model spec is written by phase 02 (or 02b): run it first")
    model = load_checkpoint(build(model_spec), checkpoint_path)
    return model.eval(), model_spec
