"""Calibration under distribution shift (Ovadia et al., 2019): one map, several test sets, one honest table.

The map is fitted on source val (phase 06); ``shift_table`` measures it on each named logit set --
typically source-like test and target test, before and after adaptation -- raw and calibrated, with
the same honest statistics as every calibration table (ECE CI, debiased ECE, null band, verdict).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from helpers.confidence.base import CalibrationMap
from helpers.metrics.calibration import calibration_summary, honest_columns


def shift_summaries(
    sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    calibration: CalibrationMap,
    *,
    n_bins: int = 15,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """``{set name: {"raw": summary, "calibrated": summary}}`` for ``{name: (logits, labels)}``."""
    if not sets:
        raise ValueError("pass at least one named (logits, labels) set, e.g. {'source test': ..., 'target test': ...}")
    return {
        name: {
            "raw": calibration_summary(logits, labels, n_bins, n_boot=n_boot, seed=seed),
            "calibrated": calibration_summary(calibration.apply(logits), labels, n_bins, n_boot=n_boot, seed=seed),
        }
        for name, (logits, labels) in sets.items()
    }


def shift_table(summaries: Mapping[str, dict]) -> pd.DataFrame:
    """One row per (set, raw / calibrated): n, accuracy, the honest ECE columns, NLL, Brier."""
    rows = {
        (name, kind): {
            "n": s["n"],
            "accuracy": s["accuracy"],
            **honest_columns(s),
            "nll": s["nll"],
            "brier": s["brier"],
        }
        for name, by_kind in summaries.items()
        for kind, s in by_kind.items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index").round(4)
    table.index.names = ["test set", "logits"]
    return table
