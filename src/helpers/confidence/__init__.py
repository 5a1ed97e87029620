"""Confidence: post-hoc calibration maps (``temperature_scaling``) and selective prediction (``selective``)."""
