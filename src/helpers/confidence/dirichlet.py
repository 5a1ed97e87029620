"""Dirichlet calibration (Kull et al., 2019) with ODIR: log_softmax(logits) @ W.T + b.

A linear map of the log-probabilities; W = I, b = 0 is the identity. See ``helpers.confidence.odir``.
"""

from __future__ import annotations

import numpy as np

from helpers.confidence import odir
from helpers.confidence.base import log_softmax
from helpers.confidence.odir import check_params  # noqa: F401  (the method interface)


def fit(val_logits, val_labels, **options):
    return odir.fit("dirichlet", log_softmax, val_logits, val_labels, **options)


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    return odir.linear(params, log_softmax(logits))


def probability_lipschitz(params: dict) -> float:
    return odir.row_norm(params)  # log-softmax moves by at most 2 |dz| in the max norm, softmax by half of that
