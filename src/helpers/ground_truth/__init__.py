"""Latency ground truth: measurement ``records`` (schema v2.0), their ``store`` on disk (``layout``, ``foreign``
files, ``migration``), ``hardware`` profiles, the measurement wing (``measurement``, ``measure_onnxruntime``,
``measure_torch``, ``measure_openvino``, the ``campaign``, phase 05's ``runtime_latency`` and ``latency``
report), the latency ``estimator`` (with its ``targets``, the ``roofline`` baseline and efficiency ``curves``);
``docs/ground_truth.md`` says what each module owns.

The store's documented API is importable from here (each imported on first use)::

    from helpers.ground_truth import GroundTruthLoader, MeasurementRecord, ModelSummary, SystemState
"""

_EXPORTS = {
    "GroundTruthLoader": "helpers.ground_truth.store",
    "MeasurementRecord": "helpers.ground_truth.records",
    "ModelSummary": "helpers.ground_truth.records",
    "SystemState": "helpers.ground_truth.records",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'helpers.ground_truth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
