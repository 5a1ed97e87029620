"""The one batched-logits loop: uint8 NHWC images -> ``preprocess`` per batch -> a forward -> float32 logits.

torch models (``architectures.predict_logits``), onnxruntime sessions (``onnx_export.onnx_logits``) and
compiled PT2E programs (``quantize.pt2e.predict_logits``) all go through ``batched_logits``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from helpers.data.datasets import check_image_batch, preprocess


def batched_logits(
    forward: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    batch_size: int = 500,
    desc: str = "predict",
    progress: bool = False,
    pad_last: bool = False,
    shape: tuple[int | None, ...] | None = None,
) -> np.ndarray:
    """float32 logits (N, classes) of ``forward`` (float32 NHWC batch -> logits array) on ``images``.

    ``pad_last`` zero-pads the last batch to ``batch_size`` (a compiled model sees one shape); ``shape``
    is the per-sample shape the model expects (None entries are free).
    """
    images = check_image_batch(images, what=desc, shape=shape)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outputs = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        batch = preprocess(images[start : start + batch_size])
        n = len(batch)
        if pad_last and n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), np.float32)])
        outputs.append(np.asarray(forward(batch))[:n])
    return np.concatenate(outputs).astype(np.float32, copy=False)
