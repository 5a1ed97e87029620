"""Post-training quantization: the calibration-input ``guard``, ORT QDQ (``ort``) and torchao PT2E (``pt2e``)."""
