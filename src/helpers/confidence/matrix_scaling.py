"""Matrix scaling (Guo et al., 2017) with ODIR: logits @ W.T + b (see ``helpers.confidence.odir``)."""

from __future__ import annotations

import numpy as np

from helpers.confidence import odir
from helpers.confidence.odir import check_params  # noqa: F401  (the method interface)


def fit(val_logits, val_labels, **options):
    return odir.fit("matrix_scaling", lambda z: z, val_logits, val_labels, **options)


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    return odir.linear(params, logits)


def probability_lipschitz(params: dict) -> float:
    return 0.5 * odir.row_norm(params)
