"""helpers.models: registry, input contract (InputScale), Keras 'same' padding, batch inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers.models.architectures import (
    ARCHITECTURES,
    InputScale,
    available_models,
    build_model,
    count_parameters,
    keras_same_padding,
    predict_logits,
)

EXPECTED = ["digits_cnn", "mlp", "mobilenetv2_tiny", "resnet20", "resnet8"]


def _random_inputs(shape, n=3, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.float32))


def test_registry_lists_every_architecture():
    assert available_models() == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_forward_nhwc_to_logits_with_plain_layers(name):
    torch.manual_seed(0)
    model = build_model(name, 7).eval()
    shape = ARCHITECTURES[name].default_input_shape
    logits = model(_random_inputs(shape))
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    # the PT2E quantizer matches exact module types: no Conv2d/Linear/BatchNorm2d subclasses
    for module in model.modules():
        for base in (nn.Conv2d, nn.Linear, nn.BatchNorm2d):
            if isinstance(module, base):
                assert type(module) is base, f"{type(module).__name__} subclasses {base.__name__}"
    assert isinstance(next(iter(model.children())), InputScale)


def test_models_are_small_and_resnet8_matches_the_mlperf_layout():
    sizes = {name: count_parameters(build_model(name, 10)) for name in EXPECTED}
    assert all(n < 500_000 for n in sizes.values()), sizes
    # MLPerf Tiny ResNet-8 from its description: conv3x3 (with bias) and BN per layer, 1x1 projections, dense
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731  (gamma, beta; the moving statistics are buffers)
    expected = (
        conv(3, 3, 16)
        + bn(16)
        + 2 * (conv(3, 16, 16) + bn(16))
        + conv(3, 16, 32)
        + conv(3, 32, 32)
        + 2 * bn(32)
        + conv(1, 16, 32)
        + conv(3, 32, 64)
        + conv(3, 64, 64)
        + 2 * bn(64)
        + conv(1, 32, 64)
        + 64 * 10
        + 10
    )
    assert sizes["resnet8"] == expected


def test_keras_same_padding_follows_tensorflow():
    # TF 'same': output ceil(n/s); total pad max((out-1)*s + k - n, 0), the odd pixel after
    assert keras_same_padding(32, 3, 2) == (0, 1)
    assert keras_same_padding(32, 3, 1) == (1, 1)
    assert keras_same_padding(32, 1, 2) == (0, 0)
    assert keras_same_padding(15, 3, 2) == (1, 1)
    assert keras_same_padding(16, 5, 2) == (1, 2)


def test_resnet8_strided_conv_pads_bottom_right_only():
    torch.manual_seed(0)
    stack = build_model("resnet8", 10).stacks[1].eval()
    x = torch.randn(2, 16, 32, 32)
    reference = F.conv2d(F.pad(x, (0, 1, 0, 1)), stack.conv1.weight, stack.conv1.bias, stride=2)
    torch_style = F.conv2d(x, stack.conv1.weight, stack.conv1.bias, stride=2, padding=1)
    ours = stack.conv1(stack.pad1(x))
    assert ours.shape == (2, 32, 16, 16)
    torch.testing.assert_close(ours, reference)
    assert not torch.allclose(ours, torch_style)


def test_input_scale_is_a_stored_factor_inside_the_model():
    torch.manual_seed(0)
    scaled = build_model("resnet8", 10).eval()
    assert float(scaled.state_dict()["input_scale.factor"]) == pytest.approx(1 / 255)
    identity = build_model("resnet8", 10, input_scale=1.0).eval()
    identity.load_state_dict({k: v for k, v in scaled.state_dict().items() if k != "input_scale.factor"}, strict=False)
    x = _random_inputs((32, 32, 3))
    torch.testing.assert_close(scaled(x), identity(x / 255.0), rtol=1e-5, atol=1e-5)
    assert float(identity.input_scale.factor) == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "resnet9", "num_classes": 10}, "unknown model 'resnet9'; choose one of digits_cnn"),
        ({"name": "resnet8", "num_classes": 1}, "num_classes must be an integer >= 2"),
        ({"name": "mlp", "num_classes": 10, "input_shape": (32, 32)}, "input_shape must be NHWC"),
        ({"name": "mlp", "num_classes": 10, "input_shape": (32, 32, 4)}, "1 or 3 channels"),
        ({"name": "resnet8", "num_classes": 10, "input_shape": (32, 16, 3)}, "square inputs only"),
    ],
)
def test_build_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_predict_logits_batches_preprocesses_and_restores_mode():
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10)
    model.train()
    images = np.random.default_rng(1).integers(0, 256, (11, 8, 8, 1), dtype=np.uint8)
    whole = predict_logits(model, images, batch_size=100)
    assert model.training
    np.testing.assert_allclose(predict_logits(model, images, batch_size=3), whole, rtol=1e-5, atol=1e-5)
    model.eval()
    with torch.no_grad():
        direct = model(torch.from_numpy(images.astype(np.float32))).numpy()
    np.testing.assert_allclose(whole, direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        predict_logits(model, images.astype(np.float32))
