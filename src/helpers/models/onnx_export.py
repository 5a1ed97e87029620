"""ONNX export of the project's models, onnxruntime inference, and the torch-vs-ONNX parity check.

The contract of every exported model:

* one input named ``images`` (:data:`INPUT_NAME`): float32 NHWC ``(batch, H, W, C)`` in raw
  0-255, exactly what ``helpers.data.preprocess`` returns -- the model's own ``InputScale``
  layer does any scaling, so every runtime feeds the same tensor;
* one output named ``logits`` (:data:`OUTPUT_NAME`): float32 ``(batch, classes)``, no softmax;
* a dynamic batch dimension (``batch``); height, width and channels are fixed;
* opset 18 (>= 17), weights inside the one ``.onnx`` file (no external data).

Export uses ``torch.onnx.export(dynamo=True)`` -- torch 2.13's default, the ``torch.export``
based exporter -- whose optimizer folds batch norm into the convolutions and Keras' asymmetric
``ZeroPad2d`` into the ``Conv`` pads, keeps the initializers' module names
(``stacks.1.conv1.weight``), and writes the same bytes for the same weights. (The legacy
TorchScript exporter leaves an unfolded Constant/Slice/Pad chain for each ``ZeroPad2d``.) The
file is checked with ``onnx.checker`` (full check, with shape inference) before it is moved into
place through ``helpers.run.atomic``.

``check_parity`` runs the torch model and the ONNX file (onnxruntime, CPUExecutionProvider) on
the same uint8 images and raises :class:`OnnxParityError` unless their logits are the same outputs
by ``helpers.models.parity`` (the one definition, which phase 08's bundle load-back uses too).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from helpers.models import parity
from helpers.models.architectures import predict_logits
from helpers.models.inference import batched_logits
from helpers.run import atomic

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
OPSET = 18


class OnnxParityError(RuntimeError):
    """The ONNX model's logits or predictions disagree with the torch model's."""


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int], opset: int = OPSET) -> Path:
    """Export ``model`` (put in eval mode) for NHWC ``input_shape`` (H, W, C) to ``path``, atomically."""
    if len(input_shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}")
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization, stable Reduce* signatures), got {opset}")
    model.eval()
    example = torch.zeros(2, *(int(s) for s in input_shape))  # batch 2: a batch of 1 would pin the dimension

    def write(tmp: Path) -> None:
        # the exporter logs "torchvision is not installed. Skipping torchvision::nms" on first use
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with warnings.catch_warnings():  # torch.export's own pytree deprecation notice, not actionable here
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            torch.onnx.export(
                model,
                (example,),
                tmp,
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
        exported = onnx.load(str(tmp))
        strip_source_metadata(exported.graph)
        onnx.save(exported, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)

    return atomic.save_with(path, write)


def strip_source_metadata(graph: onnx.GraphProto) -> None:
    """Drop the exporter's per-node metadata (Python stack traces with absolute source paths).

    Without this the same weights exported from two checkouts give different bytes.
    """
    for node in graph.node:
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                strip_source_metadata(attr.g)


def onnx_session(path: str | Path, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session for an exported model (``threads=0``: onnxruntime's default)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist; write it with export_onnx(model, path, shape)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if names != [INPUT_NAME]:
        raise ValueError(f"{path} has inputs {names}; models exported here take one input named {INPUT_NAME!r}")
    return session


def onnx_logits(
    session: ort.InferenceSession | str | Path, images: np.ndarray, batch_size: int = 500, progress: bool = False
) -> np.ndarray:
    """float32 logits of an ONNX model on uint8 NHWC ``images`` (preprocessed here), in batches."""
    if not isinstance(session, ort.InferenceSession):
        session = onnx_session(session)
    expected = tuple(d if isinstance(d, int) else None for d in session.get_inputs()[0].shape[1:])
    return batched_logits(
        lambda batch: session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0],
        images,
        batch_size,
        desc="onnx_logits",
        progress=progress,
        shape=expected,
    )


def check_parity(model: nn.Module, onnx_path: str | Path, images: np.ndarray, batch_size: int = 500) -> parity.Parity:
    """Torch vs onnxruntime logits on ``images`` by ``helpers.models.parity``; raises unless they are the same outputs.

    Raises :class:`OnnxParityError` if a logit differs beyond the parity tolerance or an argmax
    differs outside a near tie (near-tie flips are counted in the returned :class:`Parity`).
    """
    expected = predict_logits(model, images, batch_size)
    actual = onnx_logits(onnx_path, images, batch_size)
    if expected.shape != actual.shape:
        raise OnnxParityError(f"{onnx_path}: logits shape {actual.shape}, torch gives {expected.shape}")
    result = parity.compare_logits(expected, actual)
    if not result.passed:
        raise OnnxParityError(
            f"{onnx_path} disagrees with the torch model on {len(images)} images: "
            f"{result.message()}; "
            "re-export from the same weights, and compare in eval mode"
        )
    return result
