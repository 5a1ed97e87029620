"""calib-lab's helpers: every line of numerics and IO the phase notebooks call.

Layers, lowest first; a module imports only from its own layer and the layers before it
(``tests/unit/test_layers.py`` enforces this and the absence of import cycles):

1. ``run``          the run machinery: atomic writes, params, the phase graph, manifests, the runner.
                    It knows nothing of the domain (phase prechecks are named in the graph as strings).
2. ``data``         datasets, the uint8-NHWC input contract (``preprocess``), splits, text slices.
3. ``metrics``      classification and calibration metrics (our product: implemented here, cross-checked).
4. ``models``       architectures, training, checkpoints, Keras import, ONNX export.
5. ``activations``, ``quantize``, ``confidence``   what phases 03, 04 and 06-07 do with a model.
6. ``ground_truth`` latency measurements, their store, hardware profiles and the latency estimator.
7. ``environment``, ``bundle``, ``report``          the products of phases 00, 08 and 09.
8. ``cli``          the ``calib`` command.
"""
