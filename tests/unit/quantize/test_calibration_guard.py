"""Calibration guard: real digits images, real preprocess, the mistakes it must name."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.data.datasets import load_dataset, preprocess
from helpers.quantize.guard import (
    CalibrationMismatchError,
    channel_stats,
    check_calibration_inputs,
    check_calibration_slice,
)


@pytest.fixture(scope="module")
def digits_images() -> np.ndarray:
    return load_dataset("digits").train_images[:200]


@pytest.fixture(scope="module")
def rgb_images() -> np.ndarray:
    """3-channel images whose channels have clearly different statistics."""
    rng = np.random.default_rng(0)
    channels = [rng.integers(lo, hi, size=(64, 16, 16)) for lo, hi in ((0, 80), (60, 200), (150, 256))]
    return np.stack(channels, axis=-1).astype(np.uint8)


def test_channel_stats_match_numpy(rgb_images):
    stats = channel_stats(preprocess(rgb_images))
    for c in range(3):
        channel = rgb_images[..., c].astype(np.float64)
        assert stats["min"][c] == channel.min() and stats["max"][c] == channel.max()
        np.testing.assert_allclose([stats["mean"][c], stats["std"][c]], [channel.mean(), channel.std()])


def test_preprocessed_inputs_pass(digits_images):
    finding = check_calibration_inputs(preprocess(digits_images), digits_images)
    assert finding.ok and finding.diagnosis == "match"


def test_divided_by_255_stops_with_clear_message(digits_images):
    with pytest.raises(CalibrationMismatchError, match="look divided by 255"):
        check_calibration_inputs(preprocess(digits_images) / np.float32(255), digits_images)


def test_warn_mode_returns_the_finding(digits_images):
    with pytest.warns(UserWarning, match="divided by 255"):
        finding = check_calibration_inputs(preprocess(digits_images) / np.float32(255), digits_images, mode="warn")
    assert not finding.ok and finding.diagnosis == "divided_by_255"
    assert finding.to_dict()["calibration_stats"]["max"][0] == pytest.approx(digits_images.max() / 255)


def test_standardized_inputs_are_named(rgb_images):
    x = preprocess(rgb_images)
    standardized = ((x - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))).astype(np.float32)
    with pytest.warns(UserWarning):
        assert check_calibration_inputs(standardized, rgb_images, mode="warn").diagnosis == "standardized"


def test_reversed_channels_are_named(rgb_images):
    with pytest.raises(CalibrationMismatchError, match="channel-reversed"):
        check_calibration_inputs(preprocess(rgb_images)[..., ::-1].copy(), rgb_images)


def test_nchw_inputs_are_named(rgb_images):
    with pytest.raises(CalibrationMismatchError, match="NCHW"):
        check_calibration_inputs(preprocess(rgb_images).transpose(0, 3, 1, 2).copy(), rgb_images)


def test_other_scalings_are_a_generic_mismatch(digits_images):
    with pytest.raises(CalibrationMismatchError, match="differently preprocessed"):
        check_calibration_inputs(preprocess(digits_images) * np.float32(0.5), digits_images)


def test_bad_arguments_are_refused(digits_images):
    with pytest.raises(ValueError, match="unknown guard mode"):
        check_calibration_inputs(preprocess(digits_images), digits_images, mode="ignore")
    with pytest.raises(ValueError, match="float32"):
        check_calibration_inputs(preprocess(digits_images).astype(np.float64), digits_images)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((4, 8, 8, 1), np.float32), "uint8"),
        (np.zeros((4, 8, 8), np.uint8), "NHWC"),
        (np.zeros((4, 1, 8, 8), np.uint8), "NHWC"),
        (np.zeros((0, 8, 8, 1), np.uint8), "empty"),
        ([[1, 2]], "numpy array"),
    ],
)
def test_slice_validation(images, message):
    with pytest.raises(ValueError, match=message):
        check_calibration_slice(images)


def test_slice_validation_checks_labels_and_model_shape(digits_images):
    with pytest.raises(ValueError, match="one per image"):
        check_calibration_slice(digits_images, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"lie in \[0, 10\)"):
        check_calibration_slice(digits_images, np.full(len(digits_images), 12), num_classes=10)
    with pytest.raises(ValueError, match="model takes"):
        check_calibration_slice(digits_images, image_shape=(32, 32, 3))
