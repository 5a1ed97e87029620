"""Accuracy first: is a runtime's output good enough to deploy, compared with onnxruntime's on the same file?

Two gates, both against the reference runtime (onnxruntime, the runtime every other phase uses):

* **Parity** (:func:`cross_runtime_parity`) -- FP32: the project's one definition of "the same
  outputs" (``helpers.models.parity``, which phases 02 and 08 use too). bf16 (the FP32 file under
  OpenVINO's bf16 hint; onnxruntime has no bf16 kernels, so its reference is onnxruntime's FP32 logits
  of the same file): the same per-sample rule with the bf16 tolerance :data:`BF16_REL_TOL` /
  :data:`BF16_ABS_TOL`, derived from measured differences. INT8 QDQ has no elementwise tolerance:
  the runtimes round the fused requantization differently, so the same file's logits differ by up
  to ~1 (measured on ResNet-8); its gate is accuracy.
* **Accuracy** (:func:`accuracy_gate`) -- a runtime whose accuracy on the test split is more than
  :data:`ACCURACY_MARGIN` (0.3 points) below onnxruntime's on the same file (bf16: below FP32's) is
  reported and not chosen.

:func:`compare_runtimes` puts both in one row per runtime; :func:`passing_runtimes` lists the
runtimes a consumer (the bundle) may use for a model. :func:`evaluate_models` runs phase 04's models on
every runtime and applies both; which runtime a precision defaults to is phase 05's decision
(``helpers.runtime.decision``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from helpers.models import logits_file, parity
from helpers.runtime.sessions import RUNTIMES, open_session, support

REFERENCE_RUNTIME = "onnxruntime"
ACCURACY_MARGIN = 0.003  # fraction: 0.3 accuracy points
# bf16 vs FP32 on the same file, per image: |logit diff| <= max(BF16_ABS_TOL, BF16_REL_TOL x max |FP32 logit|).
# Measured (OpenVINO bf16 hint vs onnxruntime FP32, AMD EPYC with AVX512-BF16; per image max |diff| / max |logit|,
# worst image): digits CNN of runs/reference (02b, noisy test, 540 images) 0.024 (max |diff| 0.075), its val
# 0.025, 02's model on the clean test 0.024 (0.098); MLPerf ResNet-8, 10,000 CIFAR-10 test images 0.048
# (max |diff| 0.43; 92 argmax flips, every one at a near tie). REL: ~3x the worst relative (ResNet-8's); ABS: a
# floor for images whose logits are all near 0 (it binds below max |logit| 0.33; no measured image is there).
BF16_REL_TOL = 0.15
BF16_ABS_TOL = 0.05


def cross_runtime_parity(reference: np.ndarray, logits: np.ndarray, precision: str) -> tuple[bool, str]:
    """(passed, why) for one runtime's logits vs the reference's on the same images and file (bf16: vs FP32)."""
    reference, logits = np.asarray(reference), np.asarray(logits)
    if reference.shape != logits.shape:
        raise ValueError(f"logits shapes differ: reference {reference.shape}, runtime {logits.shape}")
    if precision == "int8":
        return True, "int8: no elementwise tolerance across runtimes (rounding differs); accuracy decides"
    if precision == "fp32":
        result = parity.compare_logits(reference, logits)
        return result.passed, result.message()
    return bf16_parity(reference, logits)


def bf16_parity(fp32: np.ndarray, bf16: np.ndarray) -> tuple[bool, str]:
    """(passed, why): bf16 logits within max(BF16_ABS_TOL, BF16_REL_TOL x max |FP32 logit|) of the FP32 ones per
    image, and an argmax differing only where FP32's top-2 margin is within twice that (a near tie)."""
    allowed = np.maximum(BF16_ABS_TOL, BF16_REL_TOL * np.abs(fp32.astype(np.float64)).max(axis=1))
    used = np.abs(bf16.astype(np.float64) - fp32).max(axis=1) / allowed
    used = np.where(np.isnan(used), np.inf, used)
    flipped = fp32.argmax(axis=1) != bf16.argmax(axis=1)
    far = flipped & (parity.top2_margin(fp32) > 2 * allowed)
    why = (
        f"bf16 vs FP32: {used.max():.3g} of the tolerance max({BF16_ABS_TOL:g}, {BF16_REL_TOL:g} x max |logit|); "
        f"{int(flipped.sum())} argmax differ(s), {int(far.sum())} away from a near tie"
    )
    return bool(used.max() <= 1.0 and not far.any()), why


def accuracy_gate(accuracy: float, reference_accuracy: float) -> tuple[bool, str]:
    """(passed, why): at most ACCURACY_MARGIN below the reference runtime's accuracy on the same file."""
    drop = reference_accuracy - accuracy
    if drop > ACCURACY_MARGIN + 1e-12:
        return False, (
            f"accuracy {accuracy:.4f} is {100 * drop:.2f} points below {REFERENCE_RUNTIME}'s "
            f"{reference_accuracy:.4f} (allowed: {100 * ACCURACY_MARGIN:.1f})"
        )
    return True, f"accuracy {accuracy:.4f} vs {REFERENCE_RUNTIME} {reference_accuracy:.4f}"


def compare_runtimes(
    labels: np.ndarray,
    logits: Mapping[str, np.ndarray],
    precision: str,
    reference: str = REFERENCE_RUNTIME,
    against: np.ndarray | None = None,
) -> dict[str, dict]:
    """Per runtime: accuracy, agreement (identical argmax) and max |logit diff| vs the reference, both gates.

    The reference is ``reference``'s logits among ``logits``, or ``against`` where that runtime does not run
    ``precision`` (bf16: onnxruntime's FP32 logits of the same file)."""
    if against is None and reference not in logits:
        raise ValueError(f"the reference runtime {reference!r} is missing; got {sorted(logits)}")
    labels = np.asarray(labels)
    ref = np.asarray(logits[reference] if against is None else against)
    ref_accuracy = float(np.mean(ref.argmax(1) == labels))
    rows = {}
    for runtime, values in logits.items():
        values = np.asarray(values)
        accuracy = float(np.mean(values.argmax(1) == labels))
        parity, parity_why = cross_runtime_parity(ref, values, precision)
        accurate, accuracy_why = accuracy_gate(accuracy, ref_accuracy)
        rows[runtime] = {
            "accuracy": accuracy,
            "accuracy_drop_points": 100 * (ref_accuracy - accuracy),
            "agreement": float(np.mean(values.argmax(1) == ref.argmax(1))),
            "max_abs_logit_diff": float(np.max(np.abs(values.astype(np.float64) - ref))),
            "parity_passed": parity,
            "parity": parity_why,
            "accuracy_passed": accurate,
            "accuracy_check": accuracy_why,
            "passed": parity and accurate,
        }
    return rows


def passing_runtimes(rows: Mapping[str, dict]) -> list[str]:
    """The runtimes of a :func:`compare_runtimes` result that passed both gates, in the given order."""
    return [runtime for runtime, row in rows.items() if row["passed"]]


logits_key = logits_file.runtime_key  # phase 04's runtime_logits.npz: read it with logits_file.load_runtimes


def evaluate_models(
    models: Mapping[str, tuple[str | Path, str]],
    images: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    split: str = "test",
    threads: int = 1,
    batch_size: int = 500,
    progress: bool = False,
    native_bf16: bool | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Every model on every runtime that runs its precision: (report, logits by :func:`logits_key`).

    ``models`` maps a name to (ONNX path, precision); ``images`` maps split names to uint8 images, and
    ``labels`` are ``split``'s. A ``bf16`` model (a float file) is compared with the ``fp32`` model of the
    same file on onnxruntime, which must be listed too. The report holds the settings (threads, batch
    size, runtime versions), the runtimes left out with the reason, and per model the
    :func:`compare_runtimes` rows on ``split`` and the runtimes that passed both gates; a model no runtime
    here can run (bf16 without native bf16) is kept with ``absent``, the reason. ``native_bf16``: the CPU
    capability check's answer (``sessions.support``; None asks this machine).
    """
    if split not in images:
        raise ValueError(f"split {split!r} is not among the images given ({sorted(images)})")
    fp32_of = {str(path): name for name, (path, precision) in models.items() if precision == "fp32"}
    for name, (path, precision) in models.items():
        if precision == "bf16" and str(path) not in fp32_of:
            raise ValueError(f"bf16 model {name!r} is compared with FP32 on the same file: list {path} as fp32 too")
    logits: dict[str, np.ndarray] = {}
    report = {
        "reference_runtime": REFERENCE_RUNTIME,
        "split": split,
        "accuracy_margin_points": 100 * ACCURACY_MARGIN,
        "fp32_parity_tolerance": {"rel": parity.REL_TOL, "abs": parity.ABS_TOL},
        "bf16_parity_tolerance": {"rel": BF16_REL_TOL, "abs": BF16_ABS_TOL, "against": "fp32 on onnxruntime"},
        "threads": threads,
        "batch_size": batch_size,
        "versions": {},
        "skipped": {},
        "models": {},
    }
    for name, (path, precision) in sorted(models.items(), key=lambda item: item[1][1] == "bf16"):  # fp32 first
        on_split = {}
        for runtime in RUNTIMES:
            ok, why = support(runtime, precision, native_bf16=native_bf16)
            if not ok:
                report["skipped"][f"{runtime}/{precision}"] = why
                continue
            session = open_session(path, runtime, precision=precision, threads=threads, batch_size=batch_size)
            report["versions"][runtime] = session.version()
            for split_name, split_images in images.items():
                logits[logits_key(runtime, name, split_name)] = session.logits(split_images, progress=progress)
            on_split[runtime] = logits[logits_key(runtime, name, split)]
        entry = {"precision": precision, "runtimes": {}, "passed": []}
        if precision == "bf16":
            entry["reference"] = f"fp32 on {REFERENCE_RUNTIME} (model {fp32_of[str(path)]!r}, the same file)"
        if not on_split:
            entry["absent"] = report["skipped"][f"openvino/{precision}"]
        else:
            against = logits[logits_key(REFERENCE_RUNTIME, fp32_of[str(path)], split)] if precision == "bf16" else None
            entry["runtimes"] = compare_runtimes(labels, on_split, precision, against=against)
            entry["passed"] = passing_runtimes(entry["runtimes"])
        report["models"][name] = entry
    report["models"] = {name: report["models"][name] for name in models}  # the caller's order
    return report, logits


def save_logits(path: Path, logits: Mapping[str, np.ndarray]) -> None:
    """Phase 04's ``runtime_logits.npz`` from :func:`evaluate_models`' logits (``logits_file.load_runtimes`` reads
    it)."""
    nested: dict = {}
    for key, values in logits.items():
        runtime, model, split = logits_file.BY_RUNTIME.parse(key)
        nested.setdefault(runtime, {}).setdefault(model, {})[split] = values
    logits_file.save_runtimes(path, nested)


def runtime_table(report: dict):
    """One row per model and runtime that could run its precision (bf16: OpenVINO only) of an
    :func:`evaluate_models` report: accuracy, agreement, gates. The rows do not depend on this machine: a
    runtime that did not run here (bf16 without native bf16) keeps its row, empty and not passed."""
    import pandas as pd

    columns = ("accuracy", "accuracy_drop_points", "agreement", "max_abs_logit_diff", "passed")
    rows = [
        {
            "model": name,
            "runtime": runtime,
            "precision": entry["precision"],
            **{k: entry["runtimes"].get(runtime, {"passed": False}).get(k, np.nan) for k in columns},
        }
        for name, entry in report["models"].items()
        for runtime in RUNTIMES
        if not (entry["precision"] == "bf16" and runtime == REFERENCE_RUNTIME)
    ]
    return pd.DataFrame(rows).set_index(["model", "runtime"])
