"""helpers.confidence.shift: a map fitted on each domain's val split, measured on each domain's test split."""

from __future__ import annotations

import numpy as np

from helpers.confidence.shift import RAW, shift_table, transfer_summaries
from helpers.metrics.calibration import softmax


def sample(seed: int, n: int, temperature: float, noise: float = 0.0):
    """Labels drawn from softmax(z); the model reports z * temperature, plus logit noise under shift."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, 10))
    labels = np.minimum((rng.random((n, 1)) > np.cumsum(softmax(z), axis=1)).sum(axis=1), 9)
    return z * temperature + rng.normal(0, noise, z.shape), labels


def domain(seed: int, noise: float) -> dict:
    """Val and test of one domain; 'before' and 'after' adaptation are the same model here."""
    out = {}
    for split, offset in (("val", 0), ("test", 1)):
        logits, labels = sample(seed + offset, 4000, 2.0, noise)
        out[split] = {"before": logits, "after": logits, "labels": labels}
    return out


def test_a_source_fitted_map_degrades_on_the_target_and_a_target_fitted_one_does_not():
    rows = transfer_summaries({"source": domain(0, 0.0), "target": domain(10, 3.0)}, "temperature_scaling", n_boot=300)
    by = {(r["test set"], r["model"], r["fitted on"]): r["summary"] for r in rows}
    after = "after adaptation"
    on_target = by[("target test", after, "target val")]
    under_shift = by[("target test", after, "source val")]
    assert on_target["null"]["indistinguishable"]
    assert not under_shift["null"]["indistinguishable"]  # Ovadia et al.'s finding
    assert under_shift["ece"] > 2 * on_target["ece"]
    assert by[("source test", after, "source val")]["null"]["indistinguishable"]
    assert not by[("source test", after, RAW)]["null"]["indistinguishable"]  # T = 2: overconfident raw logits
    table = shift_table(rows)
    expected = [
        (test, model, fitted)
        for test in ("source test", "target test")
        for model in ("before adaptation", after)
        for fitted in (RAW, "source val", "target val")
    ]
    assert list(table.index) == expected
    assert table.loc[("target test", after, "target val"), "verdict"] == "indistinguishable from calibrated"
