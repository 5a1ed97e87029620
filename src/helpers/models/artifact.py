"""The trained-model artifact that phase 02 hands to every later phase.

Two files: ``model.json`` (the architecture spec: registry name, classes, NHWC input shape and
the keyword arguments that rebuild it, e.g. the input scale of an imported Keras model) and
``model.pt`` (the state dict, loaded with ``weights_only=True``). ``load`` rebuilds the
architecture from the spec and loads the weights, so a checkpoint can never be paired with the
wrong architecture silently.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from helpers.models.architectures import build_model
from helpers.models.training import epoch_logger, load_checkpoint, save_checkpoint, train
from helpers.run import atomic

DEFAULT_ARCHITECTURE = {"digits": "digits_cnn", "cifar10": "resnet8"}
SOURCES = ("train", "keras_h5")


def check_params(params: dict, config: dict | None = None) -> None:
    """Validate phase 02's parameters before any kernel starts."""
    from helpers.models.architectures import available_models

    if params["model_source"] not in SOURCES:
        raise ValueError(f"model_source must be one of {', '.join(SOURCES)}, got {params['model_source']!r}")
    if params["model_source"] == "keras_h5":
        if not params["h5_path"] or not Path(params["h5_path"]).is_file():
            raise FileNotFoundError(
                f"model_source keras_h5 needs h5_path to be an existing .h5 file, got "
                f"{params['h5_path']!r} (e.g. -p h5_path=../shared/models/mlperf_tiny_resnet8_pretrained.h5)"
            )
        from helpers.models.keras_import import check_resnet8_file

        try:  # what phase 02 reads first: an HDF5 file holding a Keras ResNet-8 (its weights are read there)
            check_resnet8_file(params["h5_path"])
        except ValueError as exc:
            raise ValueError(f"h5_path: {exc}") from None
        if params["dataset"] != "cifar10":
            raise ValueError("the MLPerf Tiny ResNet-8 .h5 is a CIFAR-10 model: use -p dataset=cifar10 with keras_h5")
        if params.get("val_source", "train") != "test":
            raise ValueError(
                "the MLPerf Tiny ResNet-8 .h5 was trained on every CIFAR-10 training image, so a val split "
                "from the training data would fit temperature and threshold on images it has seen: add "
                "-p val_source=test -p val_fraction=0.5 (val = half of the test split)"
            )
    if params["architecture"] and params["architecture"] not in available_models():
        raise ValueError(
            f"unknown architecture {params['architecture']!r}; choose one of {', '.join(available_models())}"
        )
    if params["precision"] not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {params['precision']!r}")
    if params["epochs"] < 1 or params["batch_size"] < 1 or not params["lr"] > 0:  # `not >`: NaN fails too
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1 and lr > 0; got epochs={params['epochs']}, "
            f"batch_size={params['batch_size']}, lr={params['lr']}"
        )
    if not 0.0 <= params["label_smoothing"] < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {params['label_smoothing']}")


def obtain(phase, params: dict, ds, train_xy, val_xy) -> tuple[nn.Module, dict, dict | None]:
    """Phase 02's model: imported from the Keras h5 (``model_source="keras_h5"``) or built and trained here.
    Returns ``(model, spec, history)``; ``history`` is None for an import (nothing was trained)."""
    if params["model_source"] == "keras_h5":
        from helpers.models.keras_import import import_resnet8

        model, imported = import_resnet8(params["h5_path"])
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
        params["architecture"] or DEFAULT_ARCHITECTURE[params["dataset"]], ds.num_classes, ds.train_images.shape[1:]
    )
    with phase.timer("training"):
        model, history = train(
            build(model_spec),
            *train_xy,
            *val_xy,
            epochs=params["epochs"],
            batch_size=params["batch_size"],
            lr=params["lr"],
            seed=params["seed"],
            augment=params["augment"],
            label_smoothing=params["label_smoothing"],
            precision=params["precision"],
            on_epoch_end=epoch_logger(phase.log, params["epochs"]),
        )
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
