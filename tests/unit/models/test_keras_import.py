"""helpers.models.keras_import against the MLPerf Tiny ResNet-8 .h5 (``keras_h5`` fixture; skipped when absent).

The imported model is compared with an independent numpy interpreter of the Keras graph, read
straight from the file (TensorFlow's 'same' padding formula, NHWC, float64), so a wrong kernel
layout, padding side or BN epsilon shows up as a logit difference.
"""

from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from helpers.data.datasets import load_dataset
from helpers.models.architectures import build_model, count_parameters, predict_logits
from helpers.models.keras_import import import_resnet8
from helpers.models.training import load_checkpoint, save_checkpoint


def _tf_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _keras_weights(f: h5py.File) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name, group in f["model_weights"].items():
        out[name] = {
            n.decode().split("/")[-1].split(":")[0]: np.asarray(group[n.decode()], np.float64)
            for n in group.attrs["weight_names"]
        }
    return out


def keras_reference_logits(path, images: np.ndarray) -> np.ndarray:
    """Pre-softmax outputs of the Keras model, computed layer by layer in numpy from the .h5."""
    with h5py.File(path, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        weights = _keras_weights(f)
    out = {}
    for layer in layers:
        cfg, name, kind = layer["config"], layer["name"], layer["class_name"]
        inputs = [out[node[0]] for nodes in layer["inbound_nodes"] for node in nodes]
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = images.astype(np.float64)
        elif kind == "Conv2D":
            k, s = cfg["kernel_size"][0], cfg["strides"][0]
            x = np.pad(
                inputs[0], ((0, 0), _tf_same(inputs[0].shape[1], k, s), _tf_same(inputs[0].shape[2], k, s), (0, 0))
            )
            windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]  # N, H, W, C, k, k
            y = np.einsum("nhwcij,ijco->nhwo", windows, w["kernel"]) + w["bias"]
        elif kind == "BatchNormalization":
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"]) * w["gamma"] + w["beta"]
        elif kind == "Activation":
            assert cfg["activation"] == "relu"
            y = np.maximum(inputs[0], 0.0)
        elif kind == "Add":
            y = inputs[0] + inputs[1]
        elif kind == "AveragePooling2D":
            y = inputs[0].mean(axis=(1, 2), keepdims=True)
        elif kind == "Flatten":
            y = inputs[0].reshape(len(inputs[0]), -1)
        elif kind == "Dense":
            y = inputs[0] @ w["kernel"] + w["bias"]  # softmax left out: compare logits
        else:
            raise AssertionError(f"reference interpreter lacks {kind}")
        out[name] = y
    return y


@pytest.fixture(scope="module")
def imported(keras_h5):
    return import_resnet8(keras_h5)


def test_imported_model_matches_the_keras_graph(keras_h5, imported):
    model, _ = imported
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        predict_logits(model, images), keras_reference_logits(keras_h5, images), rtol=0, atol=1e-4
    )


def test_every_keras_weight_lands(keras_h5, imported):
    model, info = imported
    with h5py.File(keras_h5, "r") as f:
        weights = _keras_weights(f)
        epsilons = {
            layer["name"]: layer["config"]["epsilon"]
            for layer in json.loads(f.attrs["model_config"])["config"]["layers"]
            if layer["class_name"] == "BatchNormalization"
        }
    total = sum(a.size for layer in weights.values() for a in layer.values())
    statistics = sum(
        layer[k].size for layer in weights.values() for k in ("moving_mean", "moving_variance") if k in layer
    )
    state = model.state_dict()
    assert info["keras_weight_elements"] == total
    assert count_parameters(model) == total - statistics
    assert (
        sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked") and k != "input_scale.factor")
        == total
    )
    modules = dict(model.named_modules())
    for torch_name, keras_name in info["layer_map"].items():
        w = weights[keras_name]
        if "kernel" in w:  # back to Keras layout: OIHW -> HWIO, (out, in) -> (in, out)
            kernel = state[f"{torch_name}.weight"].numpy()
            back = kernel.transpose(2, 3, 1, 0) if kernel.ndim == 4 else kernel.T
            np.testing.assert_array_equal(back, w["kernel"].astype(np.float32))
            np.testing.assert_array_equal(state[f"{torch_name}.bias"].numpy(), w["bias"].astype(np.float32))
        else:
            for ours, theirs in (
                ("weight", "gamma"),
                ("bias", "beta"),
                ("running_mean", "moving_mean"),
                ("running_var", "moving_variance"),
            ):
                np.testing.assert_array_equal(state[f"{torch_name}.{ours}"].numpy(), w[theirs].astype(np.float32))
            assert modules[torch_name].eps == epsilons[keras_name]
    assert set(info["layer_map"].values()) == {name for name, w in weights.items() if w}


def test_input_scale_is_identity_for_raw_pixel_model(imported):
    model, info = imported
    assert info["input_scale"] == 1.0
    assert float(model.state_dict()["input_scale.factor"]) == 1.0
    assert info["output_activation_dropped"] == "softmax"


def test_pretrained_accuracy_on_cifar10(cifar10_dir, imported):
    # The MLPerf reference reports ~87% on the original CIFAR-10 test set. ../shared's CIFAR-10 is
    # re-encoded as JPEG (quality 75, 4:2:0 chroma), a shift this raw-pixel model is sensitive to:
    # it scores 75.5% on all 10k images there (75.2% on these 2000), while the import itself
    # matches the Keras graph to 1e-5 (test above). The bound below is set for that data.
    model, _ = imported
    ds = load_dataset("cifar10", cifar10_dir)
    preds = predict_logits(model, ds.test_images[:2000]).argmax(1)
    assert (preds == ds.test_labels[:2000]).mean() >= 0.72


def _edit_config(src, dst, edit) -> None:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit({layer["name"]: layer for layer in config["config"]["layers"]})
        f.attrs["model_config"] = json.dumps(config)


def test_config_mismatch_names_the_layer(keras_h5, tmp_path):
    path = tmp_path / "valid_padding.h5"
    _edit_config(keras_h5, path, lambda layers: layers["conv2d_3"]["config"].update(padding="valid"))
    with pytest.raises(ValueError, match=r"'conv2d_3' has padding='valid'"):
        import_resnet8(path)


def test_weight_shape_mismatch_names_the_layer(keras_h5, tmp_path):
    path = tmp_path / "bad_shape.h5"
    shutil.copy(keras_h5, path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/conv2d_4/conv2d_4"]
        del group["kernel:0"]
        group["kernel:0"] = np.zeros((3, 3, 16, 32), np.float32)
    with pytest.raises(ValueError, match=r"'conv2d_4': kernel \(HWIO -> OIHW\) has shape \(32, 16, 3, 3\)"):
        import_resnet8(path)


def test_not_a_keras_model(tmp_path):
    text = tmp_path / "model.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        import_resnet8(text)
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a saved Keras model"):
        import_resnet8(bare)
    with pytest.raises(FileNotFoundError):
        import_resnet8(tmp_path / "missing.h5")


def test_info_rebuilds_the_architecture_from_a_checkpoint(imported, tmp_path):
    model, info = imported
    assert not model.training
    path = save_checkpoint(model, tmp_path / "imported.pt")
    rebuilt = load_checkpoint(
        build_model(
            "resnet8",
            info["num_classes"],
            widths=tuple(info["widths"]),
            bn_eps=info["bn_eps"],
            input_scale=info["input_scale"],
        ),
        path,
    )
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(predict_logits(rebuilt, images), predict_logits(model, images))


def keras_h5_params(h5_path) -> dict:
    from helpers.run.runner import resolve_config

    params = resolve_config()["02_train"]
    return {**params, "model_source": "keras_h5", "h5_path": str(h5_path), "dataset": "cifar10", "val_source": "test"}


def test_the_precheck_refuses_an_h5_path_that_is_not_a_keras_model(tmp_path):
    """Issue 29.9: a non-HDF5 h5_path passed the precheck (only existence was checked) and failed inside 02."""
    from helpers.models.artifact import check_params

    text = tmp_path / "model.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=rf"h5_path: {text} is not an HDF5 file"):
        check_params(keras_h5_params(text))
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="h5_path: .* is HDF5 but not a saved Keras model"):
        check_params(keras_h5_params(bare))


def test_the_precheck_accepts_the_mlperf_model_and_refuses_another_architecture(keras_h5, tmp_path):
    from helpers.models.artifact import check_params

    check_params(keras_h5_params(keras_h5))
    path = tmp_path / "valid_padding.h5"
    _edit_config(keras_h5, path, lambda layers: layers["conv2d_3"]["config"].update(padding="valid"))
    with pytest.raises(ValueError, match=r"h5_path: .*'conv2d_3' has padding='valid'"):
        check_params(keras_h5_params(path))
