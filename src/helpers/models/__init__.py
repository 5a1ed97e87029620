"""Models: ``architectures``, ``training``, checkpoints (``artifact``), ``keras_import`` and ``onnx_export``."""
