"""helpers.models.training on the built-in digits set: determinism, accuracy, NaN stop, augmentation, checkpoints."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from helpers.data.datasets import load_dataset
from helpers.models.architectures import build_model, predict_logits
from helpers.models.training import (
    CROP_PADDING,
    augment_batch,
    deterministic_cpu,
    learning_curves_figure,
    load_checkpoint,
    save_checkpoint,
    train,
)
from helpers.run.atomic import sha256_file

RECIPE = dict(epochs=6, batch_size=32, lr=0.1, label_smoothing=0.1, num_threads=1, progress=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _train_digits(ds, seed: int, **overrides):
    torch.manual_seed(seed)
    model = build_model("digits_cnn", ds.num_classes)
    return train(
        model, ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, **{**RECIPE, "seed": seed, **overrides}
    )


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    model, history = _train_digits(digits, seed=0)
    path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "digits.pt")
    return model, history, path


def test_same_seed_gives_byte_identical_checkpoint(digits, trained, tmp_path):
    _, history, first = trained
    again, history_again = _train_digits(digits, seed=0)
    second = save_checkpoint(again, tmp_path / "again.pt")
    assert sha256_file(first) == sha256_file(second)
    assert history == history_again
    other, _ = _train_digits(digits, seed=1, epochs=1)
    assert sha256_file(save_checkpoint(other, tmp_path / "seed1.pt")) != sha256_file(first)


def test_digits_cnn_learns_digits(digits, trained):
    model, history, _ = trained
    accuracy = (predict_logits(model, digits.test_images).argmax(1) == digits.test_labels).mean()
    assert accuracy > 0.95
    assert history["val_acc"][-1] == pytest.approx(accuracy)
    assert set(history) == {"epoch", "loss", "train_acc", "val_acc"}
    assert history["epoch"] == list(range(1, RECIPE["epochs"] + 1))
    assert history["loss"][-1] < history["loss"][0]
    assert not model.training and next(model.parameters()).is_contiguous()


def test_exploding_loss_stops_naming_epoch_and_step(digits):
    with pytest.raises(FloatingPointError, match=r"at epoch 1/2, step \d+/\d+ \(learning rate"):
        _train_digits(digits, seed=0, epochs=2, lr=1e6)


def test_non_finite_weights_stop_at_the_first_step(digits):
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10)
    with torch.no_grad():
        model.fc.bias[0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"became nan at epoch 1/1, step 1/"):
        train(
            model,
            digits.train_images,
            digits.train_labels,
            digits.test_images,
            digits.test_labels,
            **{**RECIPE, "epochs": 1, "seed": 0},
        )


def test_augment_batch_is_a_flip_and_a_padded_crop():
    images = torch.from_numpy(np.random.default_rng(0).integers(1, 256, (16, 6, 5, 3), dtype=np.uint8))
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    p = CROP_PADDING
    for original, crop in zip(images.numpy(), out.numpy()):
        candidates = []
        for image in (original, original[:, ::-1]):
            padded = np.pad(image, ((p, p), (p, p), (0, 0)))
            candidates += [padded[dy : dy + 6, dx : dx + 5] for dy in range(2 * p + 1) for dx in range(2 * p + 1)]
        assert any(np.array_equal(crop, c) for c in candidates)
    again = augment_batch(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, augment_batch(images, torch.Generator().manual_seed(1)))


def test_augment_batch_crops_a_given_size_from_anywhere_in_the_padded_image():
    images = torch.from_numpy(np.random.default_rng(0).integers(1, 256, (64, 6, 5, 3), dtype=np.uint8))
    out = augment_batch(images, torch.Generator().manual_seed(0), size=4)
    assert out.shape == (64, 4, 4, 3) and out.dtype == torch.uint8
    p = CROP_PADDING
    offsets = set()
    for original, crop in zip(images.numpy(), out.numpy()):
        found = set()
        for image in (original, original[:, ::-1]):
            padded = np.pad(image, ((p, p), (p, p), (0, 0)))
            found |= {
                (dy, dx)
                for dy in range(6 + 2 * p - 3)
                for dx in range(5 + 2 * p - 3)
                if np.array_equal(crop, padded[dy : dy + 4, dx : dx + 4])
            }
        assert found, "each crop is a 4x4 window of the padded (maybe mirrored) image"
        offsets |= found
    assert max(dy for dy, _ in offsets) > 2 * p and max(dx for _, dx in offsets) > 2 * p  # beyond full-size range


def test_low_res_epochs_train_deterministically_on_smaller_crops(digits):
    model, history = _train_digits(digits, seed=0, epochs=2, augment=True, low_res=(6, 1))
    again, history_again = _train_digits(digits, seed=0, epochs=2, augment=True, low_res=(6, 1))
    full, _ = _train_digits(digits, seed=0, epochs=2, augment=True)
    assert history == history_again
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)
    assert any(not torch.equal(full.state_dict()[k], v) for k, v in model.state_dict().items())
    assert predict_logits(model, digits.test_images).shape == (len(digits.test_images), 10)


def test_checkpoint_round_trip_and_architecture_mismatch(trained):
    model, _, path = trained
    fresh = load_checkpoint(build_model("digits_cnn", 10), path)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    with pytest.raises(ValueError, match=r"another architecture than ResNet8: missing keys \['bn.bias'"):
        load_checkpoint(build_model("resnet8", 10), path)
    with pytest.raises(ValueError, match=r"fc.weight \(10, 64\) vs \(3, 64\)"):
        load_checkpoint(build_model("digits_cnn", 3), path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(model, path.with_name("absent.pt"))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: {"train_images": d.train_images.astype(np.float32)}, "uint8 NHWC"),
        (lambda d: {"train_labels": d.train_labels + 10}, r"outside \[0, 10\)"),
        (lambda d: {"val_labels": d.test_labels[:-1]}, "540 images but labels of shape"),
        (lambda d: {"batch_size": 0}, "batch_size"),
        (lambda d: {"precision": "fp16"}, "precision must be one of"),
        (lambda d: {"low_res": (6, 2)}, r"needs augment=True"),
        (lambda d: {"low_res": (9, 2), "augment": True}, r"1 <= size <= 8 \(the image side\)"),
        (lambda d: {"low_res": (6, 7), "augment": True}, r"1 <= epochs <= 6"),
        (lambda d: {"low_res": (1, 2), "augment": True}, r"DigitsCNN cannot take 1x1 inputs"),
    ],
)
def test_bad_arguments_fail_before_training(digits, change, match):
    args = dict(
        train_images=digits.train_images,
        train_labels=digits.train_labels,
        val_images=digits.test_images,
        val_labels=digits.test_labels,
        **RECIPE,
        seed=0,
    )
    args.update(change(digits))
    with pytest.raises(ValueError, match=match):
        train(build_model("digits_cnn", 10), **args)


def test_deterministic_cpu_restores_global_state():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with deterministic_cpu(seed=0, num_threads=1):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)


def test_learning_curves_figure(trained):
    _, history, _ = trained
    fig = learning_curves_figure(history)
    loss_ax, acc_ax = fig.axes
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), history["loss"])
    assert len(acc_ax.lines) == 2
