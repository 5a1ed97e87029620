"""The calibration guard: the tensors a quantizer calibrates on must be what evaluation feeds.

Post-training quantization fixes every activation range from the calibration tensors. If those
tensors were preprocessed differently from evaluation (pixels divided by 255, mean/std
normalized, channels reversed, NCHW instead of NHWC) the ranges are wrong by the same factor and
accuracy collapses after quantization while the FP32 model looks fine. This module owns:

* ``check_calibration_slice`` -- the slice (read by ``helpers.data.deployment`` from the deployment
  domain) is uint8 NHWC images with labels;
* ``channel_stats`` -- per-channel min, max, mean, std of an NHWC tensor;
* ``check_calibration_inputs`` -- compares the calibration tensors with
  ``helpers.data.preprocess`` of the *same* images and names the likely mistake. ``mode="raise"``
  stops with a clear message; ``mode="warn"`` returns the finding (the wrong-preprocessing
  ablation calibrates wrongly on purpose).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from helpers.data.datasets import preprocess

MODES = ("raise", "warn")
STATS = ("min", "max", "mean", "std")


class CalibrationMismatchError(ValueError):
    """The calibration tensors are not ``preprocess`` of the calibration images."""


@dataclass(frozen=True)
class GuardFinding:
    """Outcome of the comparison: ``diagnosis`` is ``"match"`` when the inputs are right."""

    diagnosis: str
    message: str
    calibration: dict[str, list[float]]
    reference: dict[str, list[float]]

    @property
    def ok(self) -> bool:
        return self.diagnosis == "match"

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "diagnosis": self.diagnosis,
            "message": self.message,
            "calibration_stats": self.calibration,
            "reference_stats": self.reference,
        }


def check_calibration_slice(
    images, labels=None, *, image_shape: tuple[int, int, int] | None = None, num_classes: int | None = None
) -> None:
    """Raise ValueError unless ``images`` is a non-empty uint8 NHWC batch (and labels match it)."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"calibration images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(
            f"calibration images must be uint8 raw pixels, got {images.dtype}; pass the "
            "calibration slice as stored by phase 01, not preprocessed or scaled floats"
        )
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"calibration images must be NHWC (N, H, W, 1|3), got shape {images.shape}; "
            "transpose NCHW batches with images.transpose(0, 2, 3, 1)"
        )
    if len(images) == 0:
        raise ValueError("the calibration slice is empty; phase 01 must write at least one image per class")
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"calibration images are {images.shape[1:]} but the model takes {tuple(image_shape)}; "
            "the slice comes from a different dataset than the model was trained on"
        )
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"calibration labels must be 1-D integers, one per image ({len(images)}), got {labels.dtype} {labels.shape}"
        )
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"calibration labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")


def channel_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel min, max, mean and std of an NHWC tensor (float64 accumulation)."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    return {"min": flat.min(axis=0), "max": flat.max(axis=0), "mean": flat.mean(axis=0), "std": flat.std(axis=0)}


def check_calibration_inputs(
    calibration_inputs: np.ndarray, images: np.ndarray, *, mode: str = "raise", rtol: float = 1e-4
) -> GuardFinding:
    """Compare calibration tensors with ``preprocess(images)``; raise or warn on a mismatch."""
    if mode not in MODES:
        raise ValueError(f"unknown guard mode {mode!r}; choose one of {', '.join(MODES)}")
    check_calibration_slice(images)
    calibration_inputs = np.asarray(calibration_inputs)
    if calibration_inputs.dtype != np.float32:
        raise ValueError(
            f"calibration inputs must be float32 model inputs, got {calibration_inputs.dtype}; "
            "build them with helpers.data.preprocess(images)"
        )
    reference = preprocess(images)
    finding = _diagnose(calibration_inputs, reference, rtol)
    if finding.ok:
        return finding
    if mode == "raise":
        raise CalibrationMismatchError(finding.message)
    warnings.warn(finding.message, stacklevel=2)
    return finding


def _diagnose(calib: np.ndarray, reference: np.ndarray, rtol: float) -> GuardFinding:
    """Name the preprocessing mistake that best explains the calibration tensors."""
    fix = "calibrate on helpers.data.preprocess(images), the function evaluation uses"
    if calib.shape != reference.shape:
        layout = calib.shape == reference.transpose(0, 3, 1, 2).shape
        what = (
            "NCHW while evaluation feeds NHWC"
            if layout
            else f"shaped {calib.shape}, evaluation feeds {reference.shape}"
        )
        return GuardFinding("layout" if layout else "shape", f"calibration inputs look {what}; {fix}", {}, {})
    c, r = channel_stats(calib), channel_stats(reference)
    shown_c = {k: v.tolist() for k, v in c.items()}
    shown_r = {k: v.tolist() for k, v in r.items()}
    if _close(c, r, rtol):
        return GuardFinding("match", "calibration inputs match evaluation preprocessing", shown_c, shown_r)
    if _close(c, {k: v / 255.0 for k, v in r.items()}, 1e-3):
        what = (
            f"divided by 255 (max {_fmt(c['max'])} vs {_fmt(r['max'])} in evaluation preprocessing); "
            "the model takes raw 0-255 pixels and scales inside itself"
        )
        return GuardFinding("divided_by_255", f"calibration inputs look {what}; {fix}", shown_c, shown_r)
    if np.allclose(c["mean"], 0.0, atol=0.1) and np.allclose(c["std"], 1.0, atol=0.1):
        what = "mean/std normalized (per-channel mean ~0, std ~1) while evaluation feeds raw 0-255 pixels"
        return GuardFinding("standardized", f"calibration inputs look {what}; {fix}", shown_c, shown_r)
    if calib.shape[-1] > 1 and _close(c, {k: v[::-1] for k, v in r.items()}, rtol):
        what = "channel-reversed (BGR vs RGB) relative to evaluation preprocessing"
        return GuardFinding("channels_reversed", f"calibration inputs look {what}; {fix}", shown_c, shown_r)
    what = (
        f"differently preprocessed: per-channel mean {_fmt(c['mean'])} / max {_fmt(c['max'])} vs "
        f"{_fmt(r['mean'])} / {_fmt(r['max'])} in evaluation preprocessing"
    )
    return GuardFinding("mismatch", f"calibration inputs look {what}; {fix}", shown_c, shown_r)


def _close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float) -> bool:
    scale = max(float(np.abs(b["max"]).max()), float(np.abs(b["min"]).max()), 1e-12)
    return all(np.allclose(a[k], b[k], rtol=rtol, atol=rtol * scale) for k in STATS)


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
