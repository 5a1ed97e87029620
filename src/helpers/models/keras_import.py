"""Import the MLPerf Tiny ResNet-8 Keras 2 HDF5 model into ``helpers.models.ResNet8`` (no TensorFlow).

The ``.h5`` file holds the architecture as JSON (``model_config`` attribute) and the weights
under ``model_weights/<layer>/`` (listed by each group's ``weight_names`` attribute). The
importer walks the Keras layer graph from the input -- stem conv/BN/ReLU, then residual stacks
(3x3 conv, BN, ReLU, 3x3 conv, BN, Add with an identity or 1x1-conv shortcut, ReLU), then
average pool, flatten, dense -- checks every layer's configuration against what ``ResNet8``
computes, builds the torch model with the file's widths, input shape and class count, and
copies every weight:

* conv kernels HWIO -> OIHW, dense kernels (in, out) -> (out, in);
* BatchNormalization gamma / beta / moving_mean / moving_variance, with the file's epsilon
  (Keras' default is 1e-3, torch's 1e-5; one value for all layers) and momentum (torch
  momentum = 1 - Keras momentum);
* Keras ``padding='same'`` is reproduced by ``ResNet8`` itself (asymmetric before strided convs);
* the input scale: the reference is trained on raw 0-255 pixels and starts with a conv, so the
  imported model's ``InputScale`` factor is 1.0 (a leading ``Rescaling`` layer, if a file had
  one, would become the factor instead). The factor is recorded in the returned info.

The dense layer's softmax is dropped: like every model here, the import returns logits.
Every Keras weight must land in exactly one torch tensor and every torch tensor must be filled;
anything else is an error naming the layer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from helpers.models.architectures import ResNet8
from helpers.run.atomic import sha256_file


@dataclass(frozen=True)
class KerasLayer:
    name: str
    class_name: str
    config: dict
    inbound: tuple[str, ...]


def read_model_config(path: str | Path) -> tuple[dict[str, KerasLayer], dict]:
    """Layers (by name, in file order) and the HDF5 root attributes of a Keras 2 ``.h5`` model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras model {path} does not exist; pass the path of a Keras .h5 file")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _text(v) for k, v in f.attrs.items()}
            has_weights = "model_weights" in f
    except OSError as exc:
        raise ValueError(
            f"{path} is not an HDF5 file ({exc}); pass a Keras model saved with model.save('x.h5')"
        ) from exc
    if "model_config" not in attrs or not has_weights:
        raise ValueError(
            f"{path} is HDF5 but not a saved Keras model (no model_config attribute or model_weights "
            "group); pass a file written by Keras model.save('x.h5'), not save_weights()"
        )
    config = json.loads(attrs["model_config"])
    if config.get("class_name") not in ("Functional", "Model"):
        raise ValueError(f"{path}: expected a Keras functional model, got {config.get('class_name')!r}")
    layers = {}
    for entry in config["config"]["layers"]:
        inbound = tuple(node[0] for nodes in entry.get("inbound_nodes", []) for node in nodes)
        layers[entry["name"]] = KerasLayer(entry["name"], entry["class_name"], entry["config"], inbound)
    return layers, attrs


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Graph:
    """Navigation over the Keras layer graph with errors that name the offending layer."""

    def __init__(self, layers: dict[str, KerasLayer]):
        self.layers = layers
        self.consumers: dict[str, list[KerasLayer]] = {name: [] for name in layers}
        for layer in layers.values():
            for src in layer.inbound:
                self.consumers[src].append(layer)

    def next(self, layer: KerasLayer, class_name: str) -> KerasLayer:
        """The single consumer of ``layer``, which must be a ``class_name`` layer."""
        found = self.consumers[layer.name]
        if len(found) != 1 or found[0].class_name != class_name:
            got = ", ".join(f"{c.name} ({c.class_name})" for c in found) or "nothing"
            raise ValueError(f"Keras layer {layer.name!r} feeds {got}; a ResNet-8 expects one {class_name} here")
        return found[0]


def _check(layer: KerasLayer, class_name: str, **expected) -> KerasLayer:
    if layer.class_name != class_name:
        raise ValueError(f"Keras layer {layer.name!r} is a {layer.class_name}; a ResNet-8 expects a {class_name} here")
    for key, value in expected.items():
        actual = layer.config.get(key)
        if (list(actual) if isinstance(actual, (list, tuple)) else actual) != value:
            raise ValueError(
                f"Keras layer {layer.name!r} has {key}={actual!r}; ResNet-8 import supports {key}={value!r}"
            )
    return layer


def _conv(layer: KerasLayer, kernel: int, stride: int) -> KerasLayer:
    return _check(
        layer,
        "Conv2D",
        kernel_size=[kernel, kernel],
        strides=[stride, stride],
        padding="same",
        activation="linear",
        use_bias=True,
        dilation_rate=[1, 1],
        data_format="channels_last",
    )


def _relu(graph: _Graph, layer: KerasLayer) -> KerasLayer:
    return _check(graph.next(layer, "Activation"), "Activation", activation="relu")


def _bn(graph: _Graph, layer: KerasLayer) -> KerasLayer:
    return _check(graph.next(layer, "BatchNormalization"), "BatchNormalization", axis=[3], center=True, scale=True)


def _walk_stack(graph: _Graph, node: KerasLayer, index: int) -> tuple[KerasLayer, dict[str, KerasLayer]]:
    """One residual stack starting at ``node``: returns its output activation and its layers by torch name."""
    convs = [c for c in graph.consumers[node.name] if c.class_name == "Conv2D"]
    main = [c for c in convs if c.config["kernel_size"] == [3, 3]]
    projection = [c for c in convs if c.config["kernel_size"] == [1, 1]]
    if len(main) != 1 or len(projection) > 1 or len(convs) != len(main) + len(projection):
        raise ValueError(
            f"Keras layer {node.name!r} should feed one 3x3 Conv2D (and at most one 1x1 shortcut "
            f"Conv2D), found {[c.name for c in convs]}"
        )
    stride = 1 if index == 0 else 2
    parts = {"conv1": _conv(main[0], 3, stride)}
    parts["bn1"] = _bn(graph, parts["conv1"])
    parts["conv2"] = _conv(graph.next(_relu(graph, parts["bn1"]), "Conv2D"), 3, 1)
    parts["bn2"] = _bn(graph, parts["conv2"])
    add = graph.next(parts["bn2"], "Add")
    shortcut_source = node.name
    if projection:
        parts["shortcut"] = _conv(projection[0], 1, stride)
        shortcut_source = projection[0].name
    if set(add.inbound) != {parts["bn2"].name, shortcut_source}:
        raise ValueError(
            f"Keras layer {add.name!r} adds {list(add.inbound)}; expected {parts['bn2'].name!r} "
            f"and the shortcut {shortcut_source!r}"
        )
    return _relu(graph, add), {f"stacks.{index}.{key}": layer for key, layer in parts.items()}


def parse_resnet8(layers: dict[str, KerasLayer]) -> tuple[dict, dict[str, KerasLayer]]:
    """Architecture arguments for ``ResNet8`` and the Keras layer for each torch module name."""
    graph = _Graph(layers)
    inputs = [layer for layer in layers.values() if layer.class_name == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError(f"expected one InputLayer, found {[i.name for i in inputs]}")
    height, width, channels = inputs[0].config["batch_input_shape"][1:]
    if len(graph.consumers[inputs[0].name]) != 1:
        raise ValueError(
            f"Keras input {inputs[0].name!r} should feed exactly one layer, feeds "
            f"{[c.name for c in graph.consumers[inputs[0].name]]}"
        )
    first = graph.consumers[inputs[0].name][0]
    input_scale = 1.0  # raw 0-255 in, straight into the first conv
    if first.class_name == "Rescaling":
        if first.config.get("offset", 0.0) != 0.0:
            raise ValueError(
                f"Keras layer {first.name!r} rescales with offset {first.config['offset']}; "
                "only a pure scale maps onto InputScale"
            )
        input_scale = float(first.config["scale"])
        first = graph.next(first, "Conv2D")
    mapping = {"conv": _conv(first, 3, 1)}
    mapping["bn"] = _bn(graph, mapping["conv"])
    node = _relu(graph, mapping["bn"])
    widths, size = [], height
    while any(c.class_name == "Conv2D" for c in graph.consumers[node.name]):
        index = len(widths)
        node, parts = _walk_stack(graph, node, index)
        mapping.update(parts)
        widths.append(parts[f"stacks.{index}.conv1"].config["filters"])
        size = size if index == 0 else math.ceil(size / 2)
    pool = graph.next(node, "AveragePooling2D")
    if list(pool.config["pool_size"]) != [size, size] or pool.config["padding"] != "valid":
        raise ValueError(
            f"Keras layer {pool.name!r} pools {pool.config['pool_size']} over a {size}x{size} map; "
            "only a global average pool maps onto ResNet8's pool"
        )
    mapping["fc"] = _check(graph.next(graph.next(pool, "Flatten"), "Dense"), "Dense", use_bias=True)
    if len(widths) == 0 or mapping["conv"].config["filters"] != widths[0]:
        raise ValueError(f"the stem conv {mapping['conv'].name!r} must have as many filters as the first stack")
    epsilons = {layer.config["epsilon"] for layer in mapping.values() if layer.class_name == "BatchNormalization"}
    if len(epsilons) != 1:
        raise ValueError(
            f"the BatchNormalization layers use different epsilons {sorted(epsilons)}; ResNet8 takes one bn_eps"
        )
    args = {
        "num_classes": mapping["fc"].config["units"],
        "input_shape": (height, width, channels),
        "widths": tuple(widths),
        "bn_eps": float(epsilons.pop()),
        "input_scale": input_scale,
    }
    return args, mapping


def _keras_weights(group: h5py.Group, layer: KerasLayer) -> dict[str, np.ndarray]:
    """A layer's weights by short name (kernel, bias, gamma, ...)."""
    if layer.name not in group:
        raise ValueError(f"Keras layer {layer.name!r} has no weights in model_weights")
    sub = group[layer.name]
    names = [_text(n) for n in sub.attrs.get("weight_names", [])]
    return {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(sub[n]) for n in names}


def _copy(target: torch.Tensor, value: np.ndarray, layer: KerasLayer, what: str) -> None:
    if tuple(target.shape) != value.shape:
        raise ValueError(
            f"Keras layer {layer.name!r}: {what} has shape {value.shape} after conversion, "
            f"the torch model expects {tuple(target.shape)}"
        )
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _load_layer(module: nn.Module, layer: KerasLayer, weights: dict[str, np.ndarray]) -> set[str]:
    """Copy one Keras layer's weights into ``module``; returns the Keras weight names used."""
    if isinstance(module, nn.Conv2d) and layer.class_name == "Conv2D":
        _copy(module.weight, weights["kernel"].transpose(3, 2, 0, 1), layer, "kernel (HWIO -> OIHW)")
        _copy(module.bias, weights["bias"], layer, "bias")
        return {"kernel", "bias"}
    if isinstance(module, nn.Linear) and layer.class_name == "Dense":
        _copy(module.weight, weights["kernel"].T, layer, "kernel ((in, out) -> (out, in))")
        _copy(module.bias, weights["bias"], layer, "bias")
        return {"kernel", "bias"}
    if isinstance(module, nn.BatchNorm2d) and layer.class_name == "BatchNormalization":
        for torch_name, keras_name in (
            ("weight", "gamma"),
            ("bias", "beta"),
            ("running_mean", "moving_mean"),
            ("running_var", "moving_variance"),
        ):
            _copy(getattr(module, torch_name), weights[keras_name], layer, keras_name)
        module.momentum = 1.0 - float(layer.config["momentum"])  # epsilon came with ResNet8(bn_eps=...)
        return {"gamma", "beta", "moving_mean", "moving_variance"}
    raise ValueError(f"Keras layer {layer.name!r} ({layer.class_name}) cannot load into torch {type(module).__name__}")


def check_resnet8_file(path: str | Path) -> dict:
    """The checks of :func:`import_resnet8` that read no weights: an HDF5 file holding a saved Keras model
    whose graph is a ResNet-8; returns the ``ResNet8`` arguments. Raises ValueError naming the problem."""
    args, _ = parse_resnet8(read_model_config(path)[0])
    return args


def import_resnet8(path: str | Path) -> tuple[ResNet8, dict]:
    """Build ``ResNet8`` from a Keras ``.h5`` (architecture + weights); returns (model in eval mode, info).

    ``info`` is JSON-ready: source sha256, keras version, ``input_scale`` (1.0 for the MLPerf
    reference: raw 0-255 inputs), ``widths`` and ``bn_eps`` (with ``num_classes``, the
    ``build_model("resnet8", ...)`` arguments that rebuild this architecture), the number of
    Keras weight elements loaded, and the Keras layer behind each torch module.
    """
    path = Path(path)
    layers, attrs = read_model_config(path)
    args, mapping = parse_resnet8(layers)
    model = ResNet8(**args)
    modules = dict(model.named_modules())
    loaded_elements = 0
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        for torch_name, layer in mapping.items():
            if torch_name not in modules:
                raise ValueError(
                    f"Keras layer {layer.name!r} maps to torch module {torch_name!r}, which "
                    "ResNet8 does not have (an identity shortcut where Keras has a conv?)"
                )
            weights = _keras_weights(group, layer)
            used = _load_layer(modules[torch_name], layer, weights)
            if set(weights) != used:
                raise ValueError(
                    f"Keras layer {layer.name!r} has weights {sorted(set(weights) - used)} "
                    "that have no place in the torch model"
                )
            loaded_elements += sum(w.size for w in weights.values())
        mapped = {layer.name for layer in mapping.values()}
        unmapped = [
            name for name, sub in group.items() if name not in mapped and len(sub.attrs.get("weight_names", []))
        ]
    if unmapped:
        raise ValueError(f"Keras layers {unmapped} carry weights but are not part of the ResNet-8 graph")
    _check_all_filled(model, mapping)
    model.eval()
    info = {
        "source": path.name,
        "sha256": sha256_file(path),
        "keras_version": attrs.get("keras_version"),
        "input_scale": args["input_scale"],
        "num_classes": args["num_classes"],
        "widths": list(args["widths"]),
        "bn_eps": args["bn_eps"],
        "keras_weight_elements": loaded_elements,
        "output_activation_dropped": layers[mapping["fc"].name].config.get("activation"),
        "layer_map": {torch_name: layer.name for torch_name, layer in mapping.items()},
    }
    return model, info


def _check_all_filled(model: nn.Module, mapping: dict[str, KerasLayer]) -> None:
    """Every torch parameter and statistic belongs to a mapped module (nothing left at its init)."""
    for key in model.state_dict():
        module_name, _, leaf = key.rpartition(".")
        if leaf in ("num_batches_tracked",) or key == "input_scale.factor":
            continue
        if module_name not in mapping:
            raise ValueError(f"torch tensor {key!r} received no Keras weight; the file lacks that layer")
