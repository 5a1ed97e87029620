"""Metrics: ``classification`` (accuracy, MCC, confusion, bootstrap CIs) and ``calibration`` (ECE, NLL, Brier, ...)."""
