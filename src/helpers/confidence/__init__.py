"""Confidence: post-hoc calibration maps (``base`` and one module per map, chosen by ``selection``, fitted for
phase 06 by ``calibrate``), calibration under shift (``shift``), selective prediction (``selective``) and
conformal prediction sets with class-wise risk control (``conformal``)."""
