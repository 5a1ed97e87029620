"""Latency ground truth: measurement ``records`` (schema v2.0), their ``store`` on disk, ``hardware`` profiles,
the ``latency`` measurement sweep and the roofline ``estimator``.

``helpers.ground_truth.GroundTruthLoader`` is the store's loader (imported on first use).
"""


def __getattr__(name: str):
    if name == "GroundTruthLoader":
        from helpers.ground_truth.store import GroundTruthLoader

        return GroundTruthLoader
    raise AttributeError(f"module 'helpers.ground_truth' has no attribute {name!r}")
