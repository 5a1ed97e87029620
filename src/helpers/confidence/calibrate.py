"""Phase 06 per model: fit every requested map on VAL, choose one by val CV NLL, measure them all on TEST.

``calibrate_phase`` (phase 06, from its typed config :class:`ConfidenceConfig`, whose methods are parsed once when
it is built) and ``calibrate_models`` (the same from plain arguments) return a :class:`Calibration` per model: the fitted maps, the selection (chosen
method and why), test summaries of the raw logits and of every map (``calibration_summary``: the
honest statistics), and the chosen map's calibrated val/test logits as float32 -- exactly what the
bundle computes, so phase 07 and the bundle see the same confidences and the same argmax.
``write_outputs`` writes phase 06's files through a ``out(name) -> path`` callable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from helpers.confidence.base import CalibrationMap, one_thread
from helpers.confidence.methods import check_methods, fit_calibration
from helpers.confidence.selection import select
from helpers.metrics.calibration import calibration_summary, improvement
from helpers.models import logits_file
from helpers.run import atomic
from helpers.run.params import typed_config

log = logging.getLogger(__name__)  # each map's fit time goes to the phase's log (helpers.run.phase)


@dataclass(frozen=True)
class Calibration:
    fits: dict[str, CalibrationMap]
    selection: dict
    pre: dict  # test summary of the raw logits
    methods: dict[str, dict]  # method -> test summary of its calibrated logits
    calibrated: dict[str, np.ndarray]  # split -> the chosen map's calibrated logits, float32

    @property
    def chosen(self) -> CalibrationMap:
        return self.fits[self.selection["chosen"]]

    def params_doc(self) -> dict:
        """``<model>/scaling_params.json``: the chosen map, the selection, and every candidate map."""
        return {
            **self.chosen.to_dict(),
            "selection": self.selection,
            "candidates": {m: fit.to_dict() for m, fit in self.fits.items()},
        }

    def metrics_doc(self) -> dict:
        post = self.methods[self.selection["chosen"]]
        return {
            "chosen_method": self.selection["chosen"],
            "pre_calibration": self.pre,
            "post_calibration": post,
            "improvement": improvement(self.pre, post),
            "methods": self.methods,
        }


def calibrate(
    logits: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    methods="all",
    *,
    seed: int = 0,
    n_bins: int = 15,
    n_boot: int = 1000,
    model: str = "",
) -> Calibration:
    """One model (named ``model`` in the log): ``logits`` / ``labels`` by split ("val" fits and selects, "test"
    measures), on one thread; ``methods`` as :func:`helpers.confidence.methods.check_methods` takes them."""
    return _calibrate(logits, labels, ConfidenceConfig(methods, n_bins, n_boot, seed), model)


def _calibrate(logits, labels, config: ConfidenceConfig, model: str) -> Calibration:
    seed = config.seed
    summary = lambda x: calibration_summary(x, labels["test"], config.n_bins, n_boot=config.n_boot, seed=seed)  # noqa: E731
    stored = lambda fit, x: fit.apply(x).astype(np.float32)  # noqa: E731  (measured as 07 and the bundle see them)
    with one_thread():
        fits = {m: _timed_fit(model, m, logits["val"], labels["val"], seed) for m in config.methods}
        selection = select(fits, logits["val"], labels["val"], seed=seed)
        chosen = fits[selection["chosen"]]
        return Calibration(
            fits=fits,
            selection=selection,
            pre=summary(logits["test"]),
            methods={m: summary(stored(fit, logits["test"])) for m, fit in fits.items()},
            calibrated={split: stored(chosen, x) for split, x in logits.items()},
        )


def _timed_fit(model: str, method: str, val_logits: np.ndarray, val_labels: np.ndarray, seed: int) -> CalibrationMap:
    start = time.perf_counter()
    fit = fit_calibration(method, val_logits, val_labels, seed=seed)
    seconds = round(time.perf_counter() - start, 4)
    fields = {"model": model, "method": method, "seconds": seconds, "iterations": fit.iterations}
    log.info("calibration_fit", extra={"fields": fields})
    return fit


def calibrate_models(
    logits: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, np.ndarray],
    methods="all",
    *,
    seed: int = 0,
    n_bins: int = 15,
    n_boot: int = 1000,
) -> dict[str, Calibration]:
    """``calibrate`` for every model of ``{model: {split: logits}}`` (``methods`` checked once, before any fit)."""
    return calibrate_phase(logits, labels, ConfidenceConfig(methods, n_bins, n_boot, seed))


def calibrate_phase(
    logits: Mapping[str, Mapping[str, np.ndarray]], labels: Mapping[str, np.ndarray], config: ConfidenceConfig
) -> dict[str, Calibration]:
    """Phase 06's maps for every model, as its typed config says (its methods parsed once, when it was built)."""
    return {
        model: _calibrate(by_split, labels, config, model)
        for model, by_split in tqdm(logits.items(), desc="calibration maps", leave=False)
    }


def write_outputs(results: Mapping[str, Calibration], out: Callable[[str], object]) -> None:
    """``<model>/scaling_params.json``, ``calibration_metrics.json`` and ``calibrated_logits.npz``."""
    for model, result in results.items():
        atomic.write_json(out(f"{model}/scaling_params.json"), result.params_doc())
    atomic.write_json(out("calibration_metrics.json"), {m: r.metrics_doc() for m, r in results.items()})
    logits_file.save(out("calibrated_logits.npz"), {model: r.calibrated for model, r in results.items()})


def fit_report(results: Mapping[str, Calibration]):
    """One row per (model, method): converged, iterations, val NLL before/after, CV NLL, chosen -- and why."""
    import pandas as pd

    rows = []
    for model, r in results.items():
        for method, fit in r.fits.items():
            rows.append(
                {
                    "model": model,
                    "method": fit.label(),
                    "converged": fit.converged,
                    "optimizer": fit.optimizer,
                    "iterations": fit.iterations,
                    "val_nll_fit": fit.nll_after,
                    "val_cv_nll": r.selection["cv_nll"][method],
                    "test_nll": r.methods[method]["nll"],
                    "test_accuracy": r.methods[method]["accuracy"],
                    "chosen": method == r.selection["chosen"],
                }
            )
    return pd.DataFrame(rows).round(4)


def reliability_panels(
    logits: Mapping[str, Mapping[str, np.ndarray]], results: Mapping[str, Calibration], models
) -> dict[str, np.ndarray]:
    """Test logits for the reliability figures: each of ``models`` before and after its chosen map."""
    panels = {}
    for model in dict.fromkeys(models):
        panels[f"{model} before"] = logits[model]["test"]
        panels[f"{model} after ({results[model].chosen.label()})"] = results[model].calibrated["test"]
    return panels


def summary(results: Mapping[str, Calibration]) -> dict:
    """Phase 06's manifest summary: per model the chosen map, accuracy and ECE before and after."""
    pick = lambda key, which: {m: r.metrics_doc()[which][key] for m, r in results.items()}  # noqa: E731
    return {
        "chosen": {m: r.chosen.label() for m, r in results.items()},
        "accuracy_pre": pick("accuracy", "pre_calibration"),
        "accuracy_post": pick("accuracy", "post_calibration"),
        "ece_pre": pick("ece", "pre_calibration"),
        "ece_post": pick("ece", "post_calibration"),
        "p_post": {m: r.metrics_doc()["post_calibration"]["null"]["p_value"] for m, r in results.items()},
    }


@dataclass(frozen=True)
class ConfidenceConfig:
    """Phase 06's typed config (``phase.config``), validated when built: ``methods`` (a string such as "all" or
    "a,b", or names) becomes the tuple of method names, parsed here once."""

    methods: tuple[str, ...] | str = "all"
    n_bins: int = 15
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(check_methods(self.methods)))
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        if self.n_boot < 0:
            raise ValueError(f"n_boot must be >= 0 (0: no bootstrap intervals), got {self.n_boot}")


def check_params(params: dict, config: dict | None = None) -> ConfidenceConfig:
    """Phase 06's precheck: its typed config (the methods, bins and bootstrap resamples)."""
    return typed_config(ConfidenceConfig, params)
