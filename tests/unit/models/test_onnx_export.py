"""helpers.models.onnx_export: real exports run by real onnxruntime sessions against the torch models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import helpers
from helpers.models.architectures import ARCHITECTURES, build_model, predict_logits
from helpers.models.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxParityError,
    check_parity,
    export_onnx,
    onnx_logits,
    onnx_session,
)
from helpers.run.atomic import sha256_file


def _model_with_random_statistics(name: str, seed: int = 0):
    """Random weights *and* batch-norm statistics, so folding BN into the convs is exercised."""
    torch.manual_seed(seed)
    model = build_model(name, 10)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.5, generator=generator)
            module.running_var.uniform_(0.05, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def _images(shape, n, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.fixture(scope="module", params=["digits_cnn", "resnet8"])
def exported(request, tmp_path_factory):
    name = request.param
    model = _model_with_random_statistics(name)
    shape = ARCHITECTURES[name].default_input_shape
    path = export_onnx(model, tmp_path_factory.mktemp(name) / f"{name}.onnx", shape)
    return name, model, shape, path


def test_graph_contract(exported):
    _, _, shape, path = exported
    graph = onnx.load(str(path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = graph.graph.input, graph.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == INPUT_NAME and dims[1:] == list(shape) and isinstance(dims[0], str)
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.name == OUTPUT_NAME
    assert not any(n.op_type == "BatchNormalization" for n in graph.graph.node)  # folded by the exporter
    # no stack traces with source paths: the same weights give the same bytes from any checkout
    assert str(Path(helpers.__file__).resolve().parent).encode() not in path.read_bytes()
    assert not list(path.parent.glob(".tmp-*")) and [p.name for p in path.parent.iterdir()] == [path.name]


def test_parity_with_torch(exported):
    _, model, shape, path = exported
    images = _images(shape, 64)
    result = check_parity(model, path, images)
    assert result.passed and result.n == 64 and result.argmax_mismatches == 0
    assert 0 < result.max_abs_diff <= result.max_allowed and result.max_tolerance_used <= 1


def test_dynamic_batch(exported):
    _, model, shape, path = exported
    session = onnx_session(path)
    for n in (1, 7):
        images = _images(shape, n, seed=n)
        logits = onnx_logits(session, images)
        assert logits.shape == (n, 10)
        np.testing.assert_allclose(logits, predict_logits(model, images), rtol=0, atol=1e-4)


def test_export_is_byte_deterministic(tmp_path):
    first = export_onnx(_model_with_random_statistics("digits_cnn"), tmp_path / "a.onnx", (8, 8, 1))
    second = export_onnx(_model_with_random_statistics("digits_cnn"), tmp_path / "b.onnx", (8, 8, 1))
    assert sha256_file(first) == sha256_file(second)


def test_parity_failure_is_reported(exported):
    name, _, shape, path = exported
    drifted = _model_with_random_statistics(name)
    with torch.no_grad():
        drifted.fc.bias += torch.linspace(0.0, 1.0, 10)
    with pytest.raises(OnnxParityError, match=r"max \|logit difference\| .* of the tolerance max\(5e-05, 2e-05 x max"):
        check_parity(drifted, path, _images(shape, 8))


def test_bad_inputs(exported, tmp_path):
    _, _, shape, path = exported
    with pytest.raises(ValueError, match="uint8"):
        onnx_logits(path, _images(shape, 2).astype(np.float32))
    with pytest.raises(ValueError, match="the model expects"):
        onnx_logits(path, _images((shape[0] + 1, shape[1], shape[2]), 2))
    with pytest.raises(FileNotFoundError):
        onnx_session(tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(build_model("mlp", 10), tmp_path / "m.onnx", (32, 32, 3), opset=13)
    assert not (tmp_path / "m.onnx").exists()
