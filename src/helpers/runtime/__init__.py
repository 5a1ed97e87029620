"""The runtime layer: one interface (``open_session``) over onnxruntime and OpenVINO, the cross-runtime
accuracy and parity gates, and this machine's measured GEMM peaks per precision."""

from helpers.runtime.checks import (
    ACCURACY_MARGIN,
    REFERENCE_RUNTIME,
    accuracy_gate,
    choose_fastest,
    compare_runtimes,
    cross_runtime_parity,
    evaluate_models,
    fastest,
    logits_key,
    passing_runtimes,
    runtime_table,
)
from helpers.runtime.sessions import (
    PRECISIONS,
    RUNTIMES,
    LayerTime,
    RuntimeUnavailable,
    Session,
    available,
    is_qdq,
    open_session,
    paired_timings,
    random_batch,
    support,
)

__all__ = [
    "ACCURACY_MARGIN",
    "PRECISIONS",
    "REFERENCE_RUNTIME",
    "RUNTIMES",
    "LayerTime",
    "RuntimeUnavailable",
    "Session",
    "accuracy_gate",
    "available",
    "choose_fastest",
    "compare_runtimes",
    "cross_runtime_parity",
    "evaluate_models",
    "fastest",
    "is_qdq",
    "logits_key",
    "open_session",
    "paired_timings",
    "passing_runtimes",
    "random_batch",
    "runtime_table",
    "support",
]
