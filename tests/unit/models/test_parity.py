"""helpers.models.parity: the one parity definition (phase 02's ONNX check and phase 08's load-back)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.metrics.calibration import softmax
from helpers.models import parity


def logits(n: int = 64, classes: int = 10, scale: float = 10.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, classes)) * scale).astype(np.float32)


def test_identical_logits_pass_with_nothing_used():
    ref = logits()
    result = parity.compare_logits(ref, ref.copy())
    assert result.passed and result.max_abs_diff == 0 and result.argmax_mismatches == 0
    assert result.describe()["rel_tol"] == parity.REL_TOL


def test_tolerance_follows_each_samples_logit_scale():
    ref = np.stack([np.linspace(-20, 20, 10), np.linspace(-0.5, 0.5, 10)]).astype(np.float64)
    allowed = parity.logit_tolerance(ref)
    assert allowed[0] == pytest.approx(parity.REL_TOL * 20) and allowed[1] == parity.ABS_TOL
    moved = ref + np.array([[0.9], [0.0]]) * allowed[0]  # within the big row's tolerance
    assert parity.compare_logits(ref, moved).passed
    moved = ref + np.array([[0.0], [1.0]]) * allowed[0]  # the same shift on the small row is 20x its tolerance
    result = parity.compare_logits(ref, moved)
    assert not result.passed and result.max_tolerance_used == pytest.approx(allowed[0] / parity.ABS_TOL)
    assert "tolerance" in result.message()


def test_argmax_flip_at_a_near_tie_is_counted_not_failed():
    ref = np.array([[5.0, 5.0 + 1e-5, 0.0], [9.0, 1.0, 0.0]])
    flipped = ref.copy()
    flipped[0, 0] += 3e-5  # within 2e-5 * 5 = 1e-4
    result = parity.compare_logits(ref, flipped)
    assert result.passed and result.argmax_mismatches == result.near_tie_mismatches == 1


def test_a_flip_beyond_the_tolerance_fails():
    ref = np.array([[5.0, 4.0, 0.0]] * 3)
    wrong = ref[:, [1, 0, 2]]
    result = parity.compare_logits(ref, wrong)
    assert not result.passed and result.argmax_mismatches == 3 and result.near_tie_mismatches == 0


def test_nan_and_bad_shapes_are_refused():
    ref = logits(4)
    bad = ref.copy()
    bad[0, 0] = np.nan
    assert not parity.compare_logits(ref, bad).passed
    with pytest.raises(ValueError, match="same images"):
        parity.compare_logits(ref, ref[:3])
    with pytest.raises(ValueError, match="same images"):
        parity.compare_logits(ref[:, :1], ref[:, :1])


@pytest.mark.parametrize("temperature", [0.2, 1.0, 3.0])
def test_confidence_tolerance_bounds_the_probability_change_the_logit_tolerance_allows(temperature):
    ref = logits(500, scale=5.0, seed=1).astype(np.float64)
    rng = np.random.default_rng(2)
    allowed = parity.logit_tolerance(ref)[:, None]
    worst = ref + np.where(rng.random(ref.shape) < 0.5, -1.0, 1.0) * allowed  # every logit at the limit
    change = np.abs(softmax(worst / temperature) - softmax(ref / temperature)).max(axis=1)
    bound = parity.confidence_tolerance(ref, temperature)
    assert np.all(change <= bound) and change.max() > 0.1 * bound.max()  # a bound, and not a loose one


def test_flag_mismatches_splits_explained_from_unexplained():
    assert parity.flag_mismatches(
        [True, True, False, False], [True, False, True, False], [False, True, False, False]
    ) == (2, 1)
