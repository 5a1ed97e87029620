"""Measurement with PyTorch on the CPU, eagerly, at fp32 or bf16 (CPU autocast) -> one record.

One subgraph = one call of a leaf ``nn.Module`` (a module without children; the inference no-ops
``Identity`` and ``Dropout`` are left out), timed by forward pre/post hooks, in call order, in
hooked passes alternating with the plain timed calls (``measurement.interleaved``); functional ops
between modules (a residual ``+``, a ``flatten``) belong to no subgraph. FLOPs of each call from
``torch.utils.flop_counter`` (convolutions and matrix products); modules it does not count are
elementwise (one operation per element of their largest tensor) unless pure layout (0). Bytes =
inputs + outputs + the module's parameters, at the dtype each tensor had in the call (weights of
autocast ops at the autocast dtype).

bf16 runs only where the CPU has native bf16 (``avx512_bf16`` or ``amx_bf16``, :func:`bf16_support`);
elsewhere it is refused with the reason.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from helpers.ground_truth.hardware import HardwareProfile, cpu_flags
from helpers.ground_truth.measurement import (
    DEFAULT_SETTINGS,
    Measurement,
    MeasurementSettings,
    SubgraphWork,
    build_measurement,
    interleaved,
    random_images,
)

TORCH_PRECISIONS = ("fp32", "bf16")
LAYOUT_MODULES = (nn.Flatten, nn.Unflatten, nn.ZeroPad2d)
NO_OP_MODULES = (nn.Identity, nn.Dropout)


def bf16_support(flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """(whether this CPU runs bf16 natively, why)."""
    flags = cpu_flags() if flags is None else flags
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if native:
        return True, f"native bf16 ({', '.join(native)})"
    return False, "the CPU has neither avx512_bf16 nor amx_bf16; bf16 would be emulated, so it is not measured"


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _leaf_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules without children, except the no-ops of inference (Identity, Dropout)."""
    return [
        (name, m)
        for name, m in module.named_modules()
        if name and not list(m.children()) and not isinstance(m, NO_OP_MODULES)
    ]


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _module_work(module: nn.Module, args, output, counted_flops: int) -> tuple[int, int]:
    """(FLOPs, bytes) of one leaf-module call; see the module docstring."""
    outputs = _tensors(output)
    tensors = _tensors(args) + outputs
    cast_weights = isinstance(module, (nn.Conv2d, nn.Linear)) and outputs  # autocast runs them at the output dtype
    param_bytes = sum(
        p.numel() * (outputs[0].element_size() if cast_weights else p.element_size())
        for p in module.parameters(recurse=False)
    )
    nbytes = sum(t.numel() * t.element_size() for t in tensors) + param_bytes
    if counted_flops:
        return counted_flops, nbytes
    if isinstance(module, LAYOUT_MODULES):
        return 0, nbytes
    return max((t.numel() for t in tensors), default=0), nbytes


def _torch_call_work(module: nn.Module, images: torch.Tensor, precision: str) -> list[tuple[str, str, int, int]]:
    """(module name, type, FLOPs, bytes) of every leaf-module call in one forward pass, in order."""
    calls: list[tuple[str, str, int, int]] = []
    counters: dict[int, FlopCounterMode] = {}

    def before(name):
        def hook(mod, args):
            counters[id(mod)] = FlopCounterMode(display=False)
            counters[id(mod)].__enter__()

        return hook

    def after(name):
        def hook(mod, args, output):
            counter = counters.pop(id(mod))
            counter.__exit__(None, None, None)
            calls.append((name, type(mod).__name__, *_module_work(mod, args, output, counter.get_total_flops())))

        return hook

    with _hooks(module, before, after), torch.inference_mode(), _autocast(precision):
        module(images)
    return calls


@contextlib.contextmanager
def _hooks(module: nn.Module, before, after) -> Iterator[None]:
    handles = []
    for name, leaf in _leaf_modules(module):
        handles.append(leaf.register_forward_pre_hook(before(name)))
        handles.append(leaf.register_forward_hook(after(name)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _torch_timings(
    module: nn.Module, images: torch.Tensor, precision: str, settings: MeasurementSettings
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """(end-to-end (wall, CPU) ms, ms matrix of leaf-module calls in order x measured passes), interleaved."""
    starts: list[int] = []
    passes: list[list[float]] = []

    def before(name):
        return lambda mod, args: starts.append(time.perf_counter_ns())

    def after(name):
        return lambda mod, args, output: passes[-1].append((time.perf_counter_ns() - starts.pop()) / 1e6)

    def hooked():
        passes.append([])
        with _hooks(module, before, after):
            module(images)

    with torch.inference_mode(), _autocast(precision):
        end_to_end = interleaved(lambda: module(images), hooked, settings.warmup, settings.repeats)
    return end_to_end, np.array(passes[settings.warmup :]).T


def _torch_operation_type(module_type: str) -> str:
    if module_type.startswith("Conv"):
        return "conv"
    if module_type == "Linear":
        return "matmul"
    if module_type in ("MaxPool2d", "AvgPool2d"):
        return "pool"
    if module_type.startswith("Adaptive"):
        return "reduce"
    if module_type in {cls.__name__ for cls in LAYOUT_MODULES}:
        return "layout"
    return "elementwise"


def measure_torch(
    module: nn.Module,
    *,
    model: str,
    precision: str,
    batch_size: int,
    image_shape: Sequence[int],
    hardware: HardwareProfile,
    settings: MeasurementSettings = DEFAULT_SETTINGS,
    run_id: str | None = None,
    run_index: int = 0,
) -> Measurement:
    """Measure a torch model eagerly on the CPU at fp32 or bf16 (autocast); ``image_shape`` is (H, W, C)."""
    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"torch measurements take precision {' or '.join(TORCH_PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and not (support := bf16_support())[0]:
        raise RuntimeError(support[1])
    if len(image_shape) != 3 or batch_size < 1:
        raise ValueError(f"need image_shape (H, W, C) and batch_size >= 1, got {image_shape}, {batch_size}")
    shape = (batch_size, *image_shape)
    images = torch.from_numpy(random_images(shape, settings.seed))
    was_training = module.training
    module.eval()
    try:
        with _torch_threads(settings.threads):
            work = _torch_call_work(module, images, precision)
            end_to_end, matrix = _torch_timings(module, images, precision, settings)
    finally:
        module.train(was_training)
    return build_measurement(
        model=model,
        runtime="torch",
        precision=precision,
        batch_size=batch_size,
        input_shape=shape,
        work=[
            SubgraphWork(kind, _torch_operation_type(kind), flops, nbytes, [name]) for name, kind, flops, nbytes in work
        ],
        subgraph_ms=matrix,
        end_to_end=end_to_end,
        hardware=hardware,
        settings=settings,
        run_id=run_id,
        run_index=run_index,
    )
