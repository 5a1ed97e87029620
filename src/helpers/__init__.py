"""calib-lab's helpers: every line of numerics and IO the phase notebooks call.

:data:`LAYERS` is the package's layer order, lowest first, and the only place it is written: a module
imports only from its own unit and from the units of earlier layers (``tests/unit/test_layers.py``
enforces it, and the absence of import cycles, from this list; ``docs/ARCHITECTURE.md`` shows the tree).

1. ``run``          the run machinery: atomic writes, params, the phase graph, manifests, the runner.
                    It knows nothing of the domain (phase prechecks are named in the graph as strings).
2. ``data``         datasets, the uint8-NHWC input contract (``preprocess``), splits, text slices.
3. ``metrics``      classification and calibration metrics (our product: implemented here, cross-checked).
4. ``models``       architectures, training, checkpoints, Keras import, ONNX export.
5. ``runtime``      onnxruntime and OpenVINO behind one session interface, the cross-runtime gates, peaks.
6. ``activations``, ``quantize``, ``confidence``, ``adaptation``   what phases 03, 04, 06-07 and 02b do.
7. ``ground_truth`` latency measurements, their store, hardware profiles and the latency estimator.
8. ``environment``, ``bundle``                      the products of phases 00 and 08.
9. ``report``, ``sweep``                            phase 09's report; sweeps of runs.
10. ``cli``         the ``calib`` command.
"""

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"run"}),
    frozenset({"data"}),
    frozenset({"metrics"}),
    frozenset({"models"}),
    frozenset({"runtime"}),
    frozenset({"activations", "quantize", "confidence", "adaptation"}),
    frozenset({"ground_truth"}),
    frozenset({"environment", "bundle"}),
    frozenset({"report", "sweep"}),
    frozenset({"cli"}),
)
