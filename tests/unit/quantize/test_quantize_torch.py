"""PT2E static INT8: real torch.export / torchao conversion of a briefly trained digits CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers.data.datasets import load_dataset, stratified_slice
from helpers.models.architectures import build_model, predict_logits
from helpers.models.training import train
from helpers.quantize import pt2e as qt


class LoggingConv2d(nn.Conv2d):
    """A harmless-looking subclass: the PT2E quantizer skips it."""


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    calibration = stratified_slice(ds.train_labels, 10, seed=0)
    return {
        "train": (ds.train_images, ds.train_labels),
        "calib": ds.train_images[calibration],
        "images": ds.test_images[:270],
        "labels": ds.test_labels[:270],
    }


@pytest.fixture(scope="module")
def model(digits) -> nn.Module:
    images, labels = digits["train"]
    torch.manual_seed(0)
    trained, _ = train(
        build_model("digits_cnn", 10),
        images,
        labels,
        digits["images"][:100],
        digits["labels"][:100],
        epochs=2,
        batch_size=64,
        lr=0.1,
        seed=0,
        progress=False,
    )
    return trained


@pytest.fixture(scope="module")
def fp32_logits(model, digits) -> np.ndarray:
    return predict_logits(model, digits["images"])


@pytest.fixture(scope="module")
def converted(model, digits) -> qt.PT2EResult:
    return qt.quantize_pt2e(model, digits["calib"])


def _layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_every_conv_and_linear_is_quantized(model, converted, digits, fp32_logits):
    assert converted.layers == _layer_names(model) and qt.layer_quantization(converted.module) == {
        name: True for name in _layer_names(model)
    }
    assert converted.clamped_weight_channels == {}
    int8_logits = qt.predict_logits(converted.module, digits["images"])
    agreement = np.mean(int8_logits.argmax(1) == fp32_logits.argmax(1))
    assert agreement > 0.97 and np.abs(int8_logits - fp32_logits).mean() < 0.1
    described = converted.describe()
    float_weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert described["size_bytes"] < 0.5 * float_weight_bytes  # int8 weights, not float copies


def test_converted_model_round_trips_through_a_file(converted, digits, tmp_path):
    path = qt.save_converted(converted.module, tmp_path / "pt2e.pt2", digits["calib"][:8])
    np.testing.assert_array_equal(
        qt.predict_logits(qt.load_converted(path), digits["images"]),
        qt.predict_logits(converted.module, digits["images"]),
    )
    with pytest.raises(FileNotFoundError, match="save_converted"):
        qt.load_converted(tmp_path / "missing.pt2")


def test_resnet8_with_keras_padding_has_every_conv_quantized():
    torch.manual_seed(0)
    resnet = build_model("resnet8", 10).eval()
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    result = qt.quantize_pt2e(resnet, images, batch_size=4)
    assert result.layers == _layer_names(resnet) and len(result.layers) == 10  # 7 3x3 convs, 2 1x1 shortcuts, fc


def test_subclassed_conv_is_named_not_skipped_silently(model, digits):
    patched = build_model("digits_cnn", 10)
    patched.load_state_dict(model.state_dict())
    original = patched.features[3]
    patched.features[3] = LoggingConv2d(original.in_channels, original.out_channels, 3, padding=1, bias=False)
    patched.features[3].load_state_dict(original.state_dict())
    with pytest.raises(qt.UnquantizedLayerError, match=r"in FP32: features\.3\. .*subclasses of nn\.Conv2d"):
        qt.quantize_pt2e(patched.eval(), digits["calib"])


def test_weight_eps_floor_on_a_model_without_internal_scaling(model, digits, fp32_logits):
    unscaled = qt.fold_input_scale(model)
    np.testing.assert_allclose(predict_logits(unscaled, digits["images"]), fp32_logits, atol=1e-4)
    first_conv = _layer_names(model)[0]
    with pytest.warns(UserWarning, match="observer floor"):
        floored = qt.quantize_pt2e(unscaled, digits["calib"])
    assert floored.clamped_weight_channels == {first_conv: model.features[0].out_channels}
    lowered = qt.quantize_pt2e(unscaled, digits["calib"], weight_eps=qt.LOWERED_WEIGHT_EPS)
    assert lowered.clamped_weight_channels == {}
    error = {
        name: np.abs(qt.predict_logits(r.module, digits["images"]) - fp32_logits).mean()
        for name, r in (("floored", floored), ("lowered", lowered))
    }
    assert error["floored"] > 2 * error["lowered"]


def test_bad_arguments(model, digits):
    with pytest.raises(ValueError, match="weight_eps"):
        qt.quantize_pt2e(model, digits["calib"], weight_eps=0.0)
    with pytest.raises(ValueError, match="uint8"):
        qt.quantize_pt2e(model, digits["calib"].astype(np.float32))
    with pytest.raises(ValueError, match="InputScale"):
        qt.fold_input_scale(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    with pytest.raises(ValueError, match="uint8 NHWC"):
        qt.predict_logits(model, digits["images"][:0])


def test_compile_failure_falls_back_to_eager_loudly(converted, digits, capsys):
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}):
        with pytest.warns(UserWarning, match="torch.compile failed"):
            runner = qt.compile_int8(converted.module, digits["images"][:32])
    assert runner.backend == "eager" and "No working C++ compiler" in runner.reason
    assert "running the eager converted model" in capsys.readouterr().out
    np.testing.assert_array_equal(
        qt.predict_logits(runner, digits["images"][:32], batch_size=32),
        qt.predict_logits(converted.module, digits["images"][:32], batch_size=32),
    )


@pytest.mark.slow
def test_inductor_runs_int8_kernels(converted, digits):
    runner = qt.compile_int8(converted.module, digits["images"][:64])
    assert runner.backend == "inductor" and "torch.ops.onednn.qconv_pointwise" in runner.kernels
    compiled = qt.predict_logits(runner, digits["images"], batch_size=64)
    eager = qt.predict_logits(converted.module, digits["images"], batch_size=64)
    assert np.mean(compiled.argmax(1) == eager.argmax(1)) > 0.99 and np.abs(compiled - eager).max() < 0.05
