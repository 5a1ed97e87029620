"""Accuracy first: is a runtime's output good enough to deploy, compared with onnxruntime's on the same file?

Two gates, both against the reference runtime (onnxruntime, the runtime every other phase uses):

* **Parity** (:func:`cross_runtime_parity`) -- FP32: the project's one definition of "the same
  outputs" (``helpers.models.parity``, which phases 02 and 08 use too). INT8 QDQ and bf16 have no
  elementwise tolerance: the runtimes round the fused requantization (or the bf16 products)
  differently, so the same file's logits differ by up to ~1 (measured on ResNet-8); their gate is
  accuracy.
* **Accuracy** (:func:`accuracy_gate`) -- a runtime whose accuracy on the test split is more than
  :data:`ACCURACY_MARGIN` (0.3 points) below onnxruntime's on the same file is reported and not
  chosen.

:func:`compare_runtimes` puts both in one row per runtime; :func:`passing_runtimes` lists the
runtimes a consumer (the bundle) may use for a model. :func:`evaluate_models` runs phase 04's models on
every runtime and applies both; :func:`choose_fastest` picks phase 08's default runtime among those
that passed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from helpers.models import logits_file, parity
from helpers.runtime.sessions import RUNTIMES, open_session, paired_timings, random_batch, support

REFERENCE_RUNTIME = "onnxruntime"
ACCURACY_MARGIN = 0.003  # fraction: 0.3 accuracy points


def cross_runtime_parity(reference: np.ndarray, logits: np.ndarray, precision: str) -> tuple[bool, str]:
    """(passed, why) for one runtime's logits vs the reference runtime's on the same images and file."""
    reference, logits = np.asarray(reference), np.asarray(logits)
    if reference.shape != logits.shape:
        raise ValueError(f"logits shapes differ: reference {reference.shape}, runtime {logits.shape}")
    if precision != "fp32":
        return True, f"{precision}: no elementwise tolerance across runtimes (rounding differs); accuracy decides"
    result = parity.compare_logits(reference, logits)
    return result.passed, result.message()


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
    labels: np.ndarray, logits: Mapping[str, np.ndarray], precision: str, reference: str = REFERENCE_RUNTIME
) -> dict[str, dict]:
    """Per runtime: accuracy, agreement (identical argmax) and max |logit diff| vs ``reference``, both gates."""
    if reference not in logits:
        raise ValueError(f"the reference runtime {reference!r} is missing; got {sorted(logits)}")
    labels = np.asarray(labels)
    ref = np.asarray(logits[reference])
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


def fastest(seconds: Mapping[str, np.ndarray], candidates: list[str], margin: float = 0.10) -> str:
    """The candidate with the smallest median time; another replaces the earlier-listed one only when it is
    more than ``margin`` faster (the explicit tie-break: near-ties keep the first listed, onnxruntime)."""
    if not candidates:
        raise ValueError("no runtime passed its checks; nothing to choose from")
    best = candidates[0]
    for runtime in candidates[1:]:
        if np.median(seconds[runtime]) < (1 - margin) * np.median(seconds[best]):
            best = runtime
    return best


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
) -> tuple[dict, dict[str, np.ndarray]]:
    """Every model on every runtime that runs its precision: (report, logits by :func:`logits_key`).

    ``models`` maps a name to (ONNX path, precision); ``images`` maps split names to uint8 images, and
    ``labels`` are ``split``'s. The report holds the settings (threads, batch size, runtime versions),
    the runtimes left out with the reason, and per model the :func:`compare_runtimes` rows on ``split``
    and the runtimes that passed both gates.
    """
    if split not in images:
        raise ValueError(f"split {split!r} is not among the images given ({sorted(images)})")
    logits: dict[str, np.ndarray] = {}
    report = {
        "reference_runtime": REFERENCE_RUNTIME,
        "split": split,
        "accuracy_margin_points": 100 * ACCURACY_MARGIN,
        "fp32_parity_tolerance": {"rel": parity.REL_TOL, "abs": parity.ABS_TOL},
        "threads": threads,
        "batch_size": batch_size,
        "versions": {},
        "skipped": {},
        "models": {},
    }
    for name, (path, precision) in models.items():
        on_split = {}
        for runtime in RUNTIMES:
            ok, why = support(runtime, precision)
            if not ok:
                report["skipped"][f"{runtime}/{precision}"] = why
                continue
            session = open_session(path, runtime, precision=precision, threads=threads, batch_size=batch_size)
            report["versions"][runtime] = session.version()
            for split_name, split_images in images.items():
                logits[logits_key(runtime, name, split_name)] = session.logits(split_images, progress=progress)
            on_split[runtime] = logits[logits_key(runtime, name, split)]
        rows = compare_runtimes(labels, on_split, precision)
        report["models"][name] = {"precision": precision, "runtimes": rows, "passed": passing_runtimes(rows)}
    return report, logits


def choose_fastest(
    paths: Mapping[str, str | Path],
    candidates: Mapping[str, list[str]],
    *,
    threads: int,
    batch_size: int = 32,
    rounds: int = 5,
    calls: int = 5,
    image_shape: tuple[int, ...] | None = None,
) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Per precision the fastest of its candidate runtimes (:func:`fastest`), from paired timings of one
    ``batch_size`` batch (:func:`paired_timings`); returns (choice, median ms per call per runtime)."""
    choice, medians = {}, {}
    for precision, runtimes in candidates.items():
        sessions = {
            r: open_session(paths[precision], r, precision=precision, threads=threads, batch_size=batch_size)
            for r in runtimes
        }
        if not sessions:
            raise ValueError(f"no runtime passed the checks for {precision}; nothing to deploy it with")
        shape = image_shape or next(iter(sessions.values())).input_shape
        batch = random_batch((batch_size, *shape))
        seconds = paired_timings({r: functools.partial(s.run, batch) for r, s in sessions.items()}, rounds, calls)
        choice[precision] = fastest(seconds, list(runtimes))
        medians[precision] = {r: 1e3 * float(np.median(v)) for r, v in seconds.items()}
    return choice, medians


def runtime_table(report: dict):
    """One row per model and runtime of an :func:`evaluate_models` report: accuracy, agreement, gates."""
    import pandas as pd

    rows = [
        {
            "model": name,
            "runtime": runtime,
            "precision": entry["precision"],
            **{k: row[k] for k in ("accuracy", "accuracy_drop_points", "agreement", "max_abs_logit_diff", "passed")},
        }
        for name, entry in report["models"].items()
        for runtime, row in entry["runtimes"].items()
    ]
    return pd.DataFrame(rows).set_index(["model", "runtime"])
