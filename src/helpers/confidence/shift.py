"""Calibration under distribution shift (Ovadia et al., 2019): which val split a map is fitted on, and what it costs.

Phase 02b hands phase 06 the logits of the model before and after adaptation on every domain's val and
test split (``helpers.adaptation.validation.load_shift_logits``). :func:`transfer_summaries` fits one map
(:data:`METHOD`, temperature scaling: the map calibration-under-shift studies measure, and one that always
moves the confidences -- phase 06's own choice may be the identity) on each domain's val split, for each of
the two models, and measures every fitted map -- and the raw logits -- on every domain's test split. The
rows a researcher reads first:

* target test, after adaptation, map fitted on target val: the deployed model (what phase 06 ships
  when the run deploys to the target);
* target test, after adaptation, map fitted on source val: how much calibration a source-fitted map
  loses under shift;
* target test, before adaptation, map fitted on target val: the unadapted model after its own
  recalibration, the baseline adaptation must not be worse than.

Every row carries the honest statistics of every calibration table (ECE with its CI, debiased ECE, the
null band's p and verdict). Rows are fixed: one per (test set, model, fitted on), in that order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from helpers.confidence.methods import fit_calibration
from helpers.metrics.calibration import calibration_summary, honest_columns

METHOD = "temperature_scaling"
RAW = "none (raw logits)"
WHEN = {"before": "before adaptation", "after": "after adaptation"}


def transfer_summaries(
    shift_logits: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    method: str = METHOD,
    *,
    n_bins: int = 15,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """One row per (test set, model, map fitted on): ``{"test set", "model", "fitted on", "method", "summary"}``.

    ``shift_logits`` is ``{domain: {"val"|"test": {"before", "after", "labels"}}}``; ``method`` the map to fit
    (:data:`METHOD` by default), fitted with ``seed`` on each domain's val split per model.
    """
    if not shift_logits:
        raise ValueError("no logits to measure calibration under shift on: phase 02b writes them (shift_logits.npz)")
    rows = []
    for when, model in WHEN.items():
        maps = {
            f"{domain} val": fit_calibration(method, sets["val"][when], sets["val"]["labels"], seed=seed)
            for domain, sets in shift_logits.items()
        }
        for domain, sets in shift_logits.items():
            logits, labels = sets["test"][when], sets["test"]["labels"]
            for fitted_on, calibrated in ((RAW, logits), *((name, m.apply(logits)) for name, m in maps.items())):
                rows.append(
                    {
                        "test set": f"{domain} test",
                        "model": model,
                        "fitted on": fitted_on,
                        "method": "" if fitted_on == RAW else method,
                        "summary": calibration_summary(calibrated, labels, n_bins, n_boot=n_boot, seed=seed),
                    }
                )
    return sorted(rows, key=lambda r: (r["test set"], r["model"] != WHEN["before"], r["fitted on"] != RAW))


def shift_table(rows: list[dict]) -> pd.DataFrame:
    """One row per (test set, model, fitted on): n, accuracy, the honest ECE columns, NLL, Brier."""
    table = pd.DataFrame(
        [
            {
                "test set": r["test set"],
                "model": r["model"],
                "fitted on": r["fitted on"],
                "n": r["summary"]["n"],
                "accuracy": r["summary"]["accuracy"],
                **honest_columns(r["summary"]),
                "nll": r["summary"]["nll"],
                "brier": r["summary"]["brier"],
            }
            for r in rows
        ]
    )
    return table.set_index(["test set", "model", "fitted on"]).round(4)
