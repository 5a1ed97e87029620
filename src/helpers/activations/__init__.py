"""Activation statistics of a model over a calibration slice (``stats``), and of MiniLM (``transformer``)."""
