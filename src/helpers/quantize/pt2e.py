"""PyTorch static INT8 with PT2E: torchao's X86InductorQuantizer, calibrated on the slice, run by Inductor.

``quantize_pt2e`` exports the model (``torch.export``, dynamic batch), inserts observers with
``prepare_pt2e`` under ``get_default_x86_inductor_quantization_config()`` (uint8 activations,
int8 per-channel symmetric weights), runs ``helpers.data.preprocess`` of the calibration slice
through it and converts with ``convert_pt2e``. ``compile_int8`` then runs the converted graph
through ``torch.compile`` (Inductor, ``freezing=True``), which lowers the quantize/dequantize
patterns to oneDNN int8 kernels; the kernels found in the generated code are recorded.

Two traps are checked, never left silent:

* **Skipped layers.** The quantizer matches layers by their *exact* module type, so a subclass of
  ``nn.Conv2d`` / ``nn.Linear`` stays FP32 without a word. ``layer_quantization`` looks at every
  conv/linear in the converted graph (quantize/dequantize on its input and a per-channel
  dequantize on its weight) and ``quantize_pt2e`` raises ``UnquantizedLayerError`` naming the
  skipped layers.
* **Weight-scale floor.** The default weight observer clamps scales at ``eps = 2**-12``. Weights
  that see raw 0-255 inputs (a model *without* an internal 1/255 scaling, like the imported MLPerf
  ResNet-8) are ~255x smaller, their true scale falls under the floor and they round to a few
  levels. ``clamped_weight_channels`` counts the clamped channels; ``quantize_pt2e`` warns naming
  the layers, and ``weight_eps`` lowers the floor (the fix). ``fold_input_scale`` builds the
  unscaled twin of one of our models to show it.

If Inductor cannot compile here (no C++ compiler, an Inductor failure), ``compile_int8`` prints
and warns the reason and returns the eager converted model -- never a silent fallback.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.models import artifact, import_noise

import_noise.quiet()  # before torchao is imported

from torchao.quantization.pt2e.observer import PerChannelMinMaxObserver
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from tqdm import tqdm

from helpers.data.datasets import preprocess
from helpers.models.architectures import InputScale
from helpers.models.inference import batched_logits
from helpers.quantize.guard import check_calibration_slice
from helpers.run import atomic

DEFAULT_WEIGHT_EPS = 2**-12  # torchao's x86 default: the smallest weight scale the observer returns
LOWERED_WEIGHT_EPS = float(torch.finfo(torch.float32).eps)  # small enough for weights that see 0-255 inputs
_LAYER_OPS = {torch.ops.aten.conv2d.default: "conv2d", torch.ops.aten.linear.default: "linear"}
_DQ_TENSOR = (
    torch.ops.quantized_decomposed.dequantize_per_tensor.default,
    torch.ops.quantized_decomposed.dequantize_per_tensor.tensor,
)
_DQ_CHANNEL = torch.ops.quantized_decomposed.dequantize_per_channel.default


class UnquantizedLayerError(RuntimeError):
    """A conv/linear layer stayed FP32 after PT2E conversion."""


@dataclass
class PT2EResult:
    """The converted model and what the checks found. ``calibration_seconds`` is for logs only."""

    module: torch.fx.GraphModule
    layers: list[str]
    clamped_weight_channels: dict[str, int]
    weight_eps: float
    calibration_seconds: float = field(default=0.0, compare=False)

    def describe(self) -> dict:
        """The deterministic part, for quant_report.json."""
        return {
            "quantizer": "torchao X86InductorQuantizer (default x86 config)",
            "activation_type": "uint8",
            "weight_type": "int8 per-channel symmetric",
            "weight_eps": self.weight_eps,
            "layers_quantized": self.layers,
            "clamped_weight_channels": self.clamped_weight_channels,
            "size_bytes": graph_tensor_bytes(self.module),
            "size_measure": "bytes of the tensors the converted graph uses",
        }


def quantization_config(weight_eps: float = DEFAULT_WEIGHT_EPS):
    """The default x86 Inductor config, with the weight observer's scale floor set to ``weight_eps``."""
    if not 0.0 < weight_eps <= DEFAULT_WEIGHT_EPS:
        raise ValueError(f"weight_eps must be in (0, {DEFAULT_WEIGHT_EPS}], got {weight_eps}")
    config = get_default_x86_inductor_quantization_config()
    observer = PerChannelMinMaxObserver.with_args(eps=weight_eps)
    return dataclasses.replace(config, weight=dataclasses.replace(config.weight, observer_or_fake_quant_ctr=observer))


def quantize_pt2e(
    model: nn.Module, images: np.ndarray, *, batch_size: int = 64, weight_eps: float = DEFAULT_WEIGHT_EPS
) -> PT2EResult:
    """Export, observe ``preprocess(images)`` in batches, convert; check every conv/linear got quantized."""
    check_calibration_slice(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    config = quantization_config(weight_eps)
    start = time.perf_counter()
    example = torch.from_numpy(preprocess(images[:batch_size]))
    exported = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    prepared = prepare_pt2e(exported.module(), X86InductorQuantizer().set_global(config))
    with torch.no_grad():
        for begin in tqdm(range(0, len(images), batch_size), desc="PT2E calibration", leave=False):
            prepared(torch.from_numpy(preprocess(images[begin : begin + batch_size])))
    converted = convert_pt2e(prepared)
    seconds = time.perf_counter() - start
    layers = layer_quantization(converted)
    skipped = sorted(name for name, ok in layers.items() if not ok)
    if skipped:
        raise UnquantizedLayerError(
            f"PT2E left {len(skipped)} layer(s) in FP32: {', '.join(skipped)}. The X86InductorQuantizer matches "
            "exact module types, so subclasses of nn.Conv2d / nn.Linear are skipped; build these layers as plain "
            "nn.Conv2d / nn.Linear (helpers.models does)"
        )
    clamped = clamped_weight_channels(converted, weight_eps)
    if clamped:
        warnings.warn(
            f"weight scales hit the observer floor eps={weight_eps:g} in {clamped} (layer: channels); "
            "those weights round to a few int8 levels -- typical for weights that see raw 0-255 inputs. "
            f"Pass weight_eps={LOWERED_WEIGHT_EPS:g} (LOWERED_WEIGHT_EPS)",
            stacklevel=2,
        )
    return PT2EResult(converted, list(layers), clamped, weight_eps, seconds)


def _layer_name(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else node.name


def layer_quantization(graph_module: torch.fx.GraphModule) -> dict[str, bool]:
    """``{layer: quantized?}`` for every conv2d/linear: dequantized input and per-channel dequantized weight."""
    result = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target in _LAYER_OPS:
            x, weight = node.args[0], node.args[1]
            quantized = (
                isinstance(x, torch.fx.Node)
                and x.target in _DQ_TENSOR
                and isinstance(weight, torch.fx.Node)
                and weight.target == _DQ_CHANNEL
            )
            result[_layer_name(node)] = quantized
    return result


def _attr(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> torch.Tensor:
    return functools.reduce(getattr, node.target.split("."), graph_module)


def clamped_weight_channels(graph_module: torch.fx.GraphModule, weight_eps: float) -> dict[str, int]:
    """``{layer: number of output channels whose weight scale sits at the eps floor}`` (non-zero only)."""
    clamped = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target in _LAYER_OPS:
            weight = node.args[1]
            if isinstance(weight, torch.fx.Node) and weight.target == _DQ_CHANNEL:
                scales = _attr(graph_module, weight.args[1])
                count = int((scales <= weight_eps * (1 + 1e-6)).sum())
                if count:
                    clamped[_layer_name(node)] = count
    return clamped


def graph_tensor_bytes(graph_module: torch.fx.GraphModule) -> int:
    """Bytes of the tensors the graph reads (int8 weights, scales, biases): the converted model's size."""
    targets = {n.target: n for n in graph_module.graph.nodes if n.op == "get_attr"}
    return sum(_attr(graph_module, node).nbytes for node in targets.values())


def fold_input_scale(model: nn.Module) -> nn.Module:
    """A copy with the ``InputScale`` factor folded into the first conv/linear: same function,
    but that layer's weights now see raw 0-255 inputs (the model "without internal scaling")."""
    scales = [m for m in model.modules() if isinstance(m, InputScale)]
    layers = [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    if len(scales) != 1 or not layers:
        raise ValueError("fold_input_scale needs a helpers.models model: one InputScale and a conv/linear after it")
    folded = copy.deepcopy(model).eval()
    factor = float(scales[0].factor)
    with torch.no_grad():
        next(m for m in folded.modules() if isinstance(m, InputScale)).factor.fill_(1.0)
        next(m for m in folded.modules() if type(m) in (nn.Conv2d, nn.Linear)).weight.mul_(factor)
    return folded


def save_converted(module: torch.fx.GraphModule, path: str | Path, images: np.ndarray) -> Path:
    """Re-export the converted model (dynamic batch, example ``images``) and ``torch.export.save`` it atomically."""
    example = torch.from_numpy(preprocess(images))
    program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    return atomic.save_with(path, lambda tmp: torch.export.save(program, str(tmp)))


def load_converted(path: str | Path) -> torch.fx.GraphModule:
    """The converted model written by :func:`save_converted`, ready for :func:`compile_int8`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist; write it with save_converted(result.module, path, images)")
    return torch.export.load(str(path)).module()


@dataclass
class Int8Runner:
    """A callable on float32 NHWC batches; ``backend`` is ``inductor`` or ``eager`` (then ``reason`` says why)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    backend: str
    reason: str | None
    kernels: list[str]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            return self.fn(x)

    def describe(self) -> dict:
        return {"backend": self.backend, "fallback_reason": self.reason, "int8_kernels": self.kernels}


def compile_int8(module: torch.fx.GraphModule, images: np.ndarray) -> Int8Runner:
    """``torch.compile`` (Inductor, freezing, static shapes) the converted model, compiling on ``images``.

    Shapes are static (each batch size compiles once): Inductor's quantized-conv lowering fails on
    a second, dynamic batch size. Falls back to the eager converted model -- printing and warning
    the reason -- if compilation fails (e.g. no C++ compiler).
    """
    from torch._inductor.utils import run_and_get_code

    example = torch.from_numpy(preprocess(images))
    compiled = torch.compile(module, dynamic=False)
    try:
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            _, code = run_and_get_code(compiled, example)
    except Exception as exc:  # Inductor needs a C++ toolchain and can fail on a graph; say so, run eager
        reason = (
            f"torch.compile failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}); running "
            "the eager converted model instead: same int8 rounding, float kernels, no int8 speed-up"
        )
        print(reason)
        warnings.warn(reason, stacklevel=2)
        return Int8Runner(module, "eager", reason, [])
    kernels = sorted(set(re.findall(r"torch\.ops\.(?:onednn|quantized)\.\w+", "\n".join(code))))
    if not kernels:
        warnings.warn(
            "Inductor compiled the model but its code calls no int8 kernel; latency will be FP32-like", stacklevel=2
        )
    return Int8Runner(compiled, "inductor", None, kernels)


def predict_logits(fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """float32 logits of a converted/compiled model on uint8 NHWC ``images``.

    The last batch is zero-padded to ``batch_size`` so a compiled model sees one shape.
    """
    with torch.no_grad():
        return batched_logits(
            lambda batch: fn(torch.from_numpy(batch)).numpy(),
            images,
            batch_size,
            desc="PT2E predict_logits",
            pad_last=True,
        )


EAGER_REASON = "pt2e_compile is off (the fast default): eager converted model, same int8 rounding, float kernels"


@dataclass
class Pt2eVariant:
    """Phase 04's PT2E model: the conversion, the runner that ran it and its logits on the evaluated images."""

    result: PT2EResult
    runner: Int8Runner
    logits: np.ndarray

    def describe(self) -> dict:
        """Its quant_report.json info: the conversion's checks and the path that ran (no timings)."""
        return {**self.result.describe(), **self.runner.describe()}

    def line(self) -> str:
        """One line: the path that ran, why, and the layers quantized."""
        reason = f" ({self.runner.reason})" if self.runner.reason else ""
        return f"PT2E path: {self.runner.backend}{reason}; layers quantized: {', '.join(self.result.layers)}"


def pt2e_variant(
    model_files: tuple[Path, Path], calibration_images: np.ndarray, images: np.ndarray, *, enabled: bool, compile: bool
) -> Pt2eVariant | None:
    """Phase 04's PT2E step (None when not ``enabled``): the model of ``model_files`` (model.json, model.pt)
    quantized with PT2E on the slice and run on ``images``, through Inductor's int8 kernels (``compile``), else
    the eager converted model (same int8 rounding; accuracy is representative, latency is not). Each step's wall
    time goes to the log (``helpers.quantize.pt2e``)."""
    if not enabled:
        return None
    model, _ = artifact.load(*model_files)
    log = logging.getLogger("helpers.quantize.pt2e")
    start = time.perf_counter()
    result = quantize_pt2e(model, calibration_images)
    log.info("timing", extra={"fields": {"name": "pt2e_quantize", "seconds": time.perf_counter() - start}})
    start = time.perf_counter()
    runner = (
        compile_int8(result.module, images[:256]) if compile else Int8Runner(result.module, "eager", EAGER_REASON, [])
    )
    logits = predict_logits(runner, images)
    name = "pt2e_compile" if compile else "pt2e_eager"
    log.info("timing", extra={"fields": {"name": name, "seconds": time.perf_counter() - start}})
    return Pt2eVariant(result, runner, logits)


def path_line(variant: Pt2eVariant | None) -> str:
    """One line for the notebook: the path PT2E ran, or that it is off."""
    return variant.line() if variant else "PT2E path: off (torch_pt2e is False)"
