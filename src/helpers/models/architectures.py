"""Model architectures: the one module that defines them, and the model side of the input contract.

Every model takes what ``helpers.data.preprocess`` produces -- float32 NHWC in raw 0-255 -- and
returns logits (no softmax). Scaling happens *inside* the model, in its first layer,
:class:`InputScale`: NHWC -> NCHW permute, then multiply by a fixed factor (``1/255`` for the
models trained here, ``1.0`` for the MLPerf Tiny ResNet-8, which was trained on raw 0-255). The
factor is a buffer, so it is stored in checkpoints and baked into exported ONNX graphs: every
runtime sees the same input contract, and the quantizer observes conv weights trained on [0, 1]
inputs (sane weight scales) while the data path stays uint8-compatible.

Architectures (``available_models()`` lists them; ``build_model(name, num_classes, ...)`` builds):

* ``digits_cnn``       -- small CNN for 8x8x1 digits (trains in seconds on CPU).
* ``resnet8``          -- the MLPerf Tiny image-classification reference for CIFAR-10, with Keras
  ``padding='same'`` reproduced exactly (asymmetric zero padding before strided convs), so the
  Keras weights (``helpers.models.keras_import``) give identical outputs.
* ``resnet20``         -- CIFAR ResNet-20 (He et al. 2016, 3x3 basic blocks, 1x1 projection shortcuts).
* ``mobilenetv2_tiny`` -- a MobileNetV2-style net for 32x32 (inverted residuals, depthwise convs).
* ``mlp``              -- flatten + two hidden layers.

All layers are plain ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm2d`` (never subclasses: the
PT2E quantizer matches module types exactly and silently skips subclasses), and every model
exports to ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from helpers.models.inference import batched_logits

DEFAULT_INPUT_SCALE = 1.0 / 255.0


class InputScale(nn.Module):
    """First layer of every model: NHWC float (raw 0-255) -> NCHW, times ``factor``.

    ``factor`` is a float32 buffer (saved in state dicts, a constant in ONNX). The permuted
    tensor is a channels-last view, which is the layout the CPU convolution kernels prefer.
    """

    def __init__(self, factor: float = DEFAULT_INPUT_SCALE):
        super().__init__()
        self.register_buffer("factor", torch.tensor(float(factor), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) * self.factor


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C) spatial mean.

    A plain mean rather than ``AdaptiveAvgPool2d(1)`` + flatten: on the channels-last tensors
    these models carry, flatten exports to ONNX as an ``as_strided`` gather; the mean exports as
    one ``ReduceMean``.
    """
    return x.mean(dim=(2, 3))


def keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding of Keras/TensorFlow ``padding='same'`` along one axis.

    TF pads ``max((ceil(size/stride) - 1) * stride + kernel - size, 0)`` in total and puts the
    odd pixel *after* (bottom/right): a 3x3 stride-2 conv on 32 pixels pads (0, 1), where
    PyTorch's ``padding=1`` would pad (1, 1) and shift every output window by one pixel.
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_conv(in_ch: int, out_ch: int, kernel: int, stride: int, size: int) -> tuple[nn.Module, nn.Conv2d]:
    """(pad, conv with bias) reproducing Keras ``padding='same'`` on a ``size`` x ``size`` input exactly.

    Symmetric padding goes into the conv itself (``pad`` is then ``nn.Identity``); asymmetric
    padding is an explicit ``nn.ZeroPad2d`` before a ``padding=0`` conv (the ONNX exporter folds
    it back into the ``Conv`` node's pads).
    """
    before, after = keras_same_padding(size, kernel, stride)
    if before == after:
        return nn.Identity(), nn.Conv2d(in_ch, out_ch, kernel, stride, padding=before)
    return nn.ZeroPad2d((before, after, before, after)), nn.Conv2d(in_ch, out_ch, kernel, stride)


class DigitsCNN(nn.Module):
    """conv(16)-conv(32)-maxpool-conv(64)-GAP-dense: ~25k parameters, for 8x8 digits."""

    def __init__(self, num_classes: int, in_channels: int = 1, input_scale: float = DEFAULT_INPUT_SCALE):
        super().__init__()
        self.input_scale = InputScale(input_scale)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_average_pool(self.features(self.input_scale(x))))


class ResNet8Stack(nn.Module):
    """One MLPerf Tiny ResNet-8 residual stack: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    The shortcut is the identity, or -- when the stack strides or widens -- a 1x1 conv with
    bias and *no* batch norm, exactly as in the reference Keras model. Convs keep their biases
    (the reference uses ``use_bias=True`` before batch norm).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, size: int, bn_eps: float):
        super().__init__()
        self.pad1, self.conv1 = same_conv(in_ch, out_ch, 3, stride, size)
        self.bn1 = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.pad2, self.conv2 = same_conv(out_ch, out_ch, 3, 1, math.ceil(size / stride))
        self.bn2 = nn.BatchNorm2d(out_ch, eps=bn_eps)
        if stride == 1 and in_ch == out_ch:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride)  # a 1x1 'same' conv never pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(self.pad1(x))))
        y = self.bn2(self.conv2(self.pad2(y)))
        return F.relu(y + self.shortcut(x))


class ResNet8(nn.Module):
    """MLPerf Tiny ResNet-8 (image classification, CIFAR-10): ~78k parameters at widths 16/32/64.

    conv3x3(16)+BN+ReLU; stack 16 (stride 1, identity shortcut); stack 32 (stride 2, 1x1
    stride-2 projection); stack 64 (stride 2, 1x1 projection); global average pool; dense.
    Batch-norm epsilon defaults to Keras' 1e-3 (the reference's value), not torch's 1e-5.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int] = (32, 32, 3),
        widths: tuple[int, int, int] = (16, 32, 64),
        bn_eps: float = 1e-3,
        input_scale: float = DEFAULT_INPUT_SCALE,
    ):
        super().__init__()
        height, width, channels = input_shape
        if height != width:
            raise ValueError(f"resnet8 reproduces Keras 'same' padding for square inputs only, got {height}x{width}")
        self.input_scale = InputScale(input_scale)
        self.pad, self.conv = same_conv(channels, widths[0], 3, 1, height)
        self.bn = nn.BatchNorm2d(widths[0], eps=bn_eps)
        stacks, in_ch, size = [], widths[0], height
        for i, out_ch in enumerate(widths):
            stride = 1 if i == 0 else 2
            stacks.append(ResNet8Stack(in_ch, out_ch, stride, size, bn_eps))
            in_ch, size = out_ch, math.ceil(size / stride)
        self.stacks = nn.Sequential(*stacks)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(self.pad(self.input_scale(x)))))
        return self.fc(global_average_pool(self.stacks(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity or 1x1 conv+BN projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20: conv3x3(16), 3 stages x 3 basic blocks (16/32/64), GAP, dense (~272k params)."""

    def __init__(self, num_classes: int, in_channels: int = 3, input_scale: float = DEFAULT_INPUT_SCALE):
        super().__init__()
        self.input_scale = InputScale(input_scale)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, in_ch = [], 16
        for i, out_ch in enumerate((16, 32, 64)):
            for j in range(3):
                blocks.append(BasicBlock(in_ch, out_ch, 2 if (i > 0 and j == 0) else 1))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_average_pool(self.blocks(self.stem(self.input_scale(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 linear projection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(in_ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (expansion, output channels, repeats, first stride): MobileNetV2's table, narrowed for 32x32.
MOBILENETV2_TINY_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))


class MobileNetV2Tiny(nn.Module):
    """MobileNetV2-style net for 32x32: stem conv3x3(16), inverted residual stages, 1x1 conv(256), GAP, dense."""

    def __init__(self, num_classes: int, in_channels: int = 3, input_scale: float = DEFAULT_INPUT_SCALE):
        super().__init__()
        self.input_scale = InputScale(input_scale)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
        in_ch = 16
        for expand, out_ch, repeats, stride in MOBILENETV2_TINY_STAGES:
            for r in range(repeats):
                layers.append(InvertedResidual(in_ch, out_ch, stride if r == 0 else 1, expand))
                in_ch = out_ch
        layers += [nn.Conv2d(in_ch, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_average_pool(self.features(self.input_scale(x))))


class MLP(nn.Module):
    """Flatten, then two hidden ReLU layers (128, 64), then the logits layer."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        hidden: tuple[int, int] = (128, 64),
        input_scale: float = DEFAULT_INPUT_SCALE,
    ):
        super().__init__()
        self.input_scale = InputScale(input_scale)
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(int(np.prod(input_shape)), hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous first: flattening the channels-last view would export as an as_strided gather
        return self.layers(self.input_scale(x).contiguous())


@dataclass(frozen=True)
class Architecture:
    """A registry entry: how to build it, its default NHWC input shape, and what it is."""

    build: Callable[..., nn.Module]
    default_input_shape: tuple[int, int, int]
    description: str


ARCHITECTURES: dict[str, Architecture] = {
    "digits_cnn": Architecture(
        lambda n, shape, **kw: DigitsCNN(n, shape[2], **kw), (8, 8, 1), "small CNN for 8x8x1 digits"
    ),
    "resnet8": Architecture(
        lambda n, shape, **kw: ResNet8(n, shape, **kw),
        (32, 32, 3),
        "MLPerf Tiny ResNet-8 (CIFAR-10 reference, Keras-exact padding)",
    ),
    "resnet20": Architecture(lambda n, shape, **kw: ResNet20(n, shape[2], **kw), (32, 32, 3), "CIFAR ResNet-20"),
    "mobilenetv2_tiny": Architecture(
        lambda n, shape, **kw: MobileNetV2Tiny(n, shape[2], **kw), (32, 32, 3), "MobileNetV2-style net for 32x32"
    ),
    "mlp": Architecture(lambda n, shape, **kw: MLP(n, shape, **kw), (32, 32, 3), "flatten + 2 hidden layers"),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(ARCHITECTURES)


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int] | None = None, **kwargs) -> nn.Module:
    """Build architecture ``name`` for ``num_classes`` classes and NHWC ``input_shape`` (H, W, C).

    ``input_shape`` defaults to the architecture's own (8x8x1 for ``digits_cnn``, 32x32x3
    otherwise). Extra keyword arguments go to the architecture (``input_scale`` for all;
    ``widths``/``bn_eps`` for ``resnet8``; ``hidden`` for ``mlp``). Seed torch first for
    reproducible initial weights.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    arch = ARCHITECTURES[name]
    shape = tuple(arch.default_input_shape if input_shape is None else input_shape)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape) or shape[2] not in (1, 3):
        raise ValueError(
            f"input_shape must be NHWC (height, width, channels) with 1 or 3 channels, got {input_shape!r}"
        )
    return arch.build(int(num_classes), tuple(int(s) for s in shape), **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter elements."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 500, progress: bool = False) -> np.ndarray:
    """float32 logits (N, classes) of ``model`` in eval mode on uint8 NHWC ``images``, in batches.

    Images go through ``helpers.data.preprocess`` (the input contract) batch by batch.
    """
    was_training = model.training
    model.eval()
    try:
        return batched_logits(
            lambda batch: model(torch.from_numpy(batch)).float().numpy(),
            images,
            batch_size,
            desc="predict_logits",
            progress=progress,
        )
    finally:
        model.train(was_training)
