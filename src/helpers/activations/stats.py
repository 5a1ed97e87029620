"""Activation statistics calibration: per-unit mean/std of declared layers and spike-rate targets.

Owns the inference-only statistics pass over a calibration slice:

* **Hooks.** Forward hooks on layers named as in ``model.named_modules()``. A *unit* is a
  channel of a 4-D output ``[N, C, H, W]`` (axis 1) and the last axis of any other output
  ``[..., d]`` (a hidden unit of a linear/MLP layer). A unit's observations are all samples x
  positions; an optional boolean mask of valid positions (the output's shape without the unit
  axis, e.g. a transformer's attention mask ``[N, T]``) drops padding.
* **Pass 1 (moments).** Each batch is reduced on the fly in float64 with torch, in cache-sized
  pieces copied into a reused scratch buffer (count, mean, M2 = sum of squared deviations from
  the piece's mean, two-pass within the piece), and merged into the running values with the
  parallel update of Chan, Golub & LeVeque (1979); activations are never stored. ``sigma`` is the population std
  (ddof 0); ``sigma < eps`` is clamped to ``eps`` and counted per layer. Pass 1 also counts
  ``positive`` spikes (a > 0) and non-finite values -- any NaN/Inf is an error naming the layer.
* **Pass 2 (z-score spikes).** With mu and sigma frozen, counts ``zscore`` spikes,
  (a - mu) / sigma > theta, evaluated exactly as a > mu + theta * sigma in the activation's own
  dtype (see :func:`_spike_threshold`).
* **Rate targets.** ``r_star[definition][l]`` = spikes / (observations x width): the fraction of
  unit-positions of layer l that spike over the slice.
* **Inference only.** The model runs in eval mode under ``torch.inference_mode``; every
  state_dict tensor is hashed before and after, and any change is an error naming the tensors.

Layout of layers of different widths (fields of :class:`ActivationStats`, and the arrays of
``calibration_stats.npz``)::

    mu, sigma      [L, d_max] float64  row l holds layer l's widths[l] units left-aligned; zero padded
    mask           [L, d_max] bool     True on real units (mask[l, :widths[l]])
    widths         [L] int64           units per layer
    layer_names    [L] str             in the declared order
    sample_counts  [L] int64           observations per unit (samples x valid positions)
    clamp_counts   [L] int64           units whose sigma was raised to eps
    eps            0-d float64

``rate_targets.json`` holds ``r_star`` per definition (lists aligned with ``layer_names``),
``theta``, ``eps``, ``layer_names``, the model ``role`` and the ``slice_sha256``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm import tqdm

from helpers.data.datasets import check_image_batch, check_indices, preprocess, slice_hash
from helpers.models.architectures import build_model
from helpers.run import atomic
from helpers.run.params import param, typed_config

log = logging.getLogger(__name__)  # each role's statistics event goes to the open phase's log (helpers.run.phase)

SPIKE_DEFINITIONS = ("zscore", "positive")
STATS_FILE = "calibration_stats.npz"
TARGETS_FILE = "rate_targets.json"
DEFAULT_EPS = 1e-6
DEFAULT_THETA = 1.0
_CHUNK_ELEMENTS = 1 << 18  # 2 MiB of float64 per reduction step
# The pair compares a tuned model with its base, as the design's instruction-tuned / base pair does:
# ``base`` is the model before adaptation (phase 02's), ``adapted`` the one later phases read (02b's;
# the same weights with adaptation=none); ``init`` (the architecture seeded, never trained) is a control.
MODEL_ROLES = ("base", "adapted", "init")


@dataclass(frozen=True)
class Batch:
    """One forward pass: ``inputs`` for the forward function, and the valid-position mask (or None)."""

    inputs: Any
    valid: torch.Tensor | None = None


@dataclass(frozen=True)
class ActivationStats:
    """Per-unit statistics and per-layer rate targets of one model role (layout: module docstring)."""

    layer_names: list[str]
    mu: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    widths: np.ndarray
    sample_counts: np.ndarray
    clamp_counts: np.ndarray
    r_star: dict[str, np.ndarray]
    eps: float
    theta: float
    role: str
    slice_sha256: str


class _LayerStats:
    """Running per-unit count/mean/M2 and spike counts of one layer, float64 torch tensors."""

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.spikes = dict.fromkeys(SPIKE_DEFINITIONS, 0)
        self.nan = 0
        self.inf = 0
        self._scratch_buffers: dict[torch.dtype, torch.Tensor] = {}

    @property
    def width(self) -> int:
        return self.mean.numel()

    def add_moments(self, x: torch.Tensor) -> None:
        """Merge one batch (units on axis 1, see :func:`_observations`); count a > 0 and non-finite values."""
        chunk_means = [self._merge_chunk(chunk) for chunk in _chunks(x)]
        if chunk_means and not torch.isfinite(torch.stack(chunk_means)).all():
            self.nan += int(torch.isnan(x).sum())  # a float64 sum of float32 terms is finite iff every term is
            self.inf += int(torch.isinf(x).sum())

    def _merge_chunk(self, x: torch.Tensor) -> torch.Tensor:
        """Two-pass count/mean/M2 of one chunk in float64 (in place on a copy), then Chan et al.'s merge.

        Returns the chunk's mean (for the non-finite check)."""
        n_b = x.numel() // x.shape[1]
        dims, shape = _unit_axes(x)
        deviations = self._scratch(torch.float64, x.shape).copy_(x)
        mean_b = deviations.sum(dims).div_(n_b)
        m2_b = deviations.sub_(mean_b.view(shape)).square_().sum(dims)
        self.spikes["positive"] += self._count_greater(x, 0.0)
        if self.count == 0:
            self.mean, self.m2 = mean_b, m2_b
        else:
            n = self.count + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / n)
            self.m2 = self.m2 + m2_b + delta.square() * (self.count * n_b / n)
        self.count += n_b
        return mean_b

    def add_zscore_spikes(self, x: torch.Tensor, threshold: torch.Tensor) -> None:
        """Count a > threshold per unit (``threshold`` from :func:`_spike_threshold`, in x's dtype)."""
        shape = _unit_axes(x)[1]
        self.spikes["zscore"] += sum(self._count_greater(chunk, threshold.view(shape)) for chunk in _chunks(x))

    def _count_greater(self, x: torch.Tensor, threshold: torch.Tensor | float) -> int:
        """How many x > threshold (broadcast). The 0/1 result goes to a float32 buffer and is summed:
        several times faster on CPU than a bool comparison with count_nonzero, and exact (below 2**24
        hits a float32 sum is exact; larger pieces are summed in float64)."""
        hits = torch.gt(x, threshold, out=self._scratch(torch.float32, x.shape))
        return int(hits.sum(dtype=torch.float64) if hits.numel() >= 1 << 24 else hits.sum())

    def _scratch(self, dtype: torch.dtype, shape: torch.Size) -> torch.Tensor:
        """A buffer of ``shape`` reused across chunks and batches: no fresh pages for each piece."""
        buffer = self._scratch_buffers.get(dtype)
        if buffer is None or buffer.numel() < shape.numel():
            buffer = self._scratch_buffers[dtype] = torch.empty(shape.numel(), dtype=dtype)
        return buffer[: shape.numel()].view(shape)


def _observations(output: Any, valid: torch.Tensor | None, name: str) -> torch.Tensor:
    """A layer output as a contiguous tensor with units on axis 1: rows ``[M, d]`` or ``[N, C, H*W]``.

    4-D outputs are read in their memory order without copying: channels-last memory is already
    rows of channels; NCHW memory is ``[N, C, H*W]``. Masked outputs keep the valid positions only.
    """
    if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.ndim < 2:
        kind = (
            f"a {output.dtype} tensor of shape {tuple(output.shape)}"
            if isinstance(output, torch.Tensor)
            else type(output).__name__
        )
        raise ValueError(
            f"layer {name!r} returned {kind}; declare layers whose output is one floating "
            "tensor [N, C, H, W] or [..., d] (e.g. a conv, linear or activation module)"
        )
    units_last = output.movedim(1, -1) if output.ndim == 4 else output
    if valid is not None:
        if tuple(valid.shape) != tuple(units_last.shape[:-1]):
            raise ValueError(
                f"layer {name!r}: mask shape {tuple(valid.shape)} does not match the output's "
                f"positions {tuple(units_last.shape[:-1])}; the mask must cover every axis but the "
                "unit axis"
            )
        return units_last[valid]
    if output.ndim == 4 and not output.is_contiguous(memory_format=torch.channels_last):
        return output.reshape(output.shape[0], output.shape[1], -1).contiguous()
    return units_last.reshape(-1, units_last.shape[-1]).contiguous()


def _unit_axes(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """(axes to reduce, broadcast shape of a per-unit vector) for observations with units on axis 1."""
    return [0, *range(2, x.ndim)], [1, -1] + [1] * (x.ndim - 2)


def _chunks(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``x`` split along its first axis into contiguous pieces of about ``_CHUNK_ELEMENTS`` values
    (none when ``x`` has no observations).

    Reducing a batch piece by piece keeps the float64 copy and the comparison result in
    cache-sized scratch buffers: a whole-batch reduction spends most of its time on memory.
    """
    if x.numel() == 0:
        return ()
    return x.split(max(1, _CHUNK_ELEMENTS // x[0].numel()))


def _spike_threshold(mu: torch.Tensor, sigma: torch.Tensor, theta: float, dtype: torch.dtype) -> torch.Tensor:
    """mu + theta * sigma (float64) rounded *down* to ``dtype``.

    (a - mu) / sigma > theta is a > t with t = mu + theta * sigma (sigma > 0). For ``a`` of a
    coarser dtype, a > t exactly when a > round_down(t): no value of that dtype lies between
    round_down(t) and t. So pass 2 compares activations in their own dtype, with no conversion.
    """
    t = mu + theta * sigma
    low = t.to(dtype)
    return torch.where(low.to(torch.float64) > t, torch.nextafter(low, torch.full_like(low, -math.inf)), low)


def state_dict_digests(model: nn.Module) -> dict[str, str]:
    """sha256 of every state_dict tensor (name, dtype, shape and raw bytes), by name."""
    digests = {}
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h = hashlib.sha256(f"{t.dtype}{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy())
        digests[key] = h.hexdigest()
    return digests


def _check_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if isinstance(layers, str) or not layers:
        raise ValueError(
            f"layers must be a non-empty list of module names, got {layers!r}; "
            f"available: {', '.join(n for n in modules if n)}"
        )
    unknown = [n for n in layers if n not in modules or n == ""]
    if unknown:
        raise ValueError(
            f"unknown layer(s) {unknown}; available layer names (model.named_modules()): "
            f"{', '.join(n for n in modules if n)}"
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be unique, got {list(layers)}")
    return {n: modules[n] for n in layers}


def _check_args(model: Any, role: str, eps: float, theta: float) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model missing: expected a torch nn.Module, got {type(model).__name__}; "
            "build it with helpers.models.build_model (or init_model for the 'init' role)"
        )
    if not isinstance(role, str) or not role:
        raise ValueError(f"role must be a non-empty string naming the model role (e.g. 'trained'), got {role!r}")
    _check_eps_theta(eps, theta)


def _check_eps_theta(eps: float, theta: float) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite float > 0 (the sigma floor), got {eps!r}")
    if not (isinstance(theta, (int, float)) and math.isfinite(theta)):
        raise ValueError(f"theta must be a finite float (the z-score spike threshold), got {theta!r}")


def _run_pass(
    model: nn.Module,
    modules: dict[str, nn.Module],
    batches: Sequence[Batch],
    forward: Callable[[nn.Module, Any], Any],
    on_output: Callable,
    desc: str,
) -> None:
    """One forward pass over ``batches`` with ``on_output(name, observations)`` hooked on every layer."""
    current: dict[str, torch.Tensor | None] = {"valid": None}

    def hook_for(name: str):
        def hook(module, inputs, output):
            on_output(name, _observations(output, current["valid"], name))

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        with torch.inference_mode():
            for batch in tqdm(batches, desc=desc, leave=False):
                current["valid"] = batch.valid
                forward(model, batch.inputs)
    finally:
        for handle in handles:
            handle.remove()


def _padded(rows: list[np.ndarray], d_max: int, dtype) -> np.ndarray:
    out = np.zeros((len(rows), d_max), dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def collect_activation_stats(
    model: nn.Module,
    layers: Sequence[str],
    batches: Sequence[Batch],
    forward: Callable[[nn.Module, Any], Any],
    *,
    role: str,
    slice_sha256: str,
    eps: float = DEFAULT_EPS,
    theta: float = DEFAULT_THETA,
) -> ActivationStats:
    """Two hooked passes over ``batches`` (in order): per-unit mu/sigma, clamp counts and rate targets.

    ``forward(model, batch.inputs)`` runs one batch. The model is put in eval mode (its
    training flag is restored afterwards); a change to any state_dict tensor is an error.
    """
    _check_args(model, role, eps, theta)
    modules = _check_layers(model, layers)
    if len(batches) == 0:
        raise ValueError("empty calibration slice: no batches to run; pass at least one sample")
    before = state_dict_digests(model)
    was_training = model.training
    model.eval()
    try:
        stats = {name: _LayerStats(name) for name in modules}
        _run_pass(model, modules, batches, forward, lambda name, x: stats[name].add_moments(x), f"{role}: moments")
        _check_finite(stats.values())
        sigma = {n: s.m2.div(s.count).sqrt() for n, s in stats.items()}
        clamped = {n: sg < eps for n, sg in sigma.items()}
        sigma = {n: sg.clamp(min=eps) for n, sg in sigma.items()}
        thresholds: dict[tuple[str, torch.dtype], torch.Tensor] = {}

        def count_zscore(name: str, x: torch.Tensor) -> None:
            if (name, x.dtype) not in thresholds:
                thresholds[name, x.dtype] = _spike_threshold(stats[name].mean, sigma[name], theta, x.dtype)
            stats[name].add_zscore_spikes(x, thresholds[name, x.dtype])

        _run_pass(model, modules, batches, forward, count_zscore, f"{role}: z-score spikes")
    finally:
        model.train(was_training)
    _check_unchanged(before, state_dict_digests(model))
    return _assemble(stats, sigma, clamped, eps=eps, theta=theta, role=role, slice_sha256=slice_sha256)


def _check_finite(stats) -> None:
    bad = [f"{s.name!r}: {s.nan} NaN, {s.inf} Inf" for s in stats if s.nan or s.inf]
    if bad:
        raise ValueError(
            f"non-finite activations in layer(s) {'; '.join(bad)}; check the model weights "
            "and the inputs (images must go through helpers.data.preprocess: raw 0-255)"
        )
    empty = [s.name for s in stats if s.count == 0]
    if empty:
        raise ValueError(
            f"layer(s) {empty} saw no valid positions (never called by forward, or fully masked); "
            "declare layers on the model's forward path and keep at least one unmasked position"
        )


def _check_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        raise RuntimeError(
            f"model state changed during the statistics pass (tensors {changed}); the pass must "
            "be inference only: a module mutates its parameters or buffers in forward (e.g. a "
            "BatchNorm forced into train mode updates running_mean/running_var)"
        )


def _assemble(stats: dict[str, _LayerStats], sigma: dict, clamped: dict, **meta) -> ActivationStats:
    names = list(stats)
    widths = np.array([stats[n].width for n in names], dtype=np.int64)
    d_max = int(widths.max())
    counts = np.array([stats[n].count for n in names], dtype=np.int64)
    positions = counts * widths
    return ActivationStats(
        layer_names=names,
        mu=_padded([stats[n].mean.numpy() for n in names], d_max, np.float64),
        sigma=_padded([sigma[n].numpy() for n in names], d_max, np.float64),
        mask=np.arange(d_max)[None, :] < widths[:, None],
        widths=widths,
        sample_counts=counts,
        clamp_counts=np.array([int(clamped[n].sum()) for n in names], dtype=np.int64),
        r_star={
            d: np.array([stats[n].spikes[d] for n in names], dtype=np.float64) / positions for d in SPIKE_DEFINITIONS
        },
        **meta,
    )


def _forward_images(model: nn.Module, images: np.ndarray) -> torch.Tensor:
    return model(torch.from_numpy(preprocess(images)))


def image_activation_stats(
    model: nn.Module,
    layers: Sequence[str],
    images: np.ndarray,
    indices: np.ndarray,
    *,
    role: str,
    batch_size: int = 250,
    eps: float = DEFAULT_EPS,
    theta: float = DEFAULT_THETA,
) -> ActivationStats:
    """Statistics over the calibration slice ``images[indices]`` (uint8 NHWC), in index order.

    Batches go through ``helpers.data.preprocess``; the slice hash is ``helpers.data.slice_hash``.
    """
    images, indices = check_image_batch(images, what="activation statistics"), np.asarray(indices)
    check_indices(indices, len(images), "calibration slice", "index the same image array the slice was drawn from")
    if len(indices) == 0:
        raise ValueError("empty calibration slice: use the 'calibration' indices of splits.npz")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = [Batch(images[indices[s : s + batch_size]]) for s in range(0, len(indices), batch_size)]
    return collect_activation_stats(
        model,
        layers,
        batches,
        _forward_images,
        role=role,
        slice_sha256=slice_hash(indices, images),
        eps=eps,
        theta=theta,
    )


def init_model(name: str, num_classes: int, seed: int, **kwargs) -> nn.Module:
    """The ``init`` role: architecture ``name`` with seed-fixed initial weights, never trained, eval mode.

    Seeds a forked torch RNG, so the caller's global RNG state is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(name, num_classes, **kwargs)
    return model.eval()


def default_layers(model: nn.Module) -> list[str]:
    """Layers hooked when none are declared: the pre-activations feeding the model's nonlinearities.

    Every ``nn.BatchNorm2d`` output in module order (a conv block's pre-activation: ``a > 0`` is
    exactly its ReLU firing, and the z-score is taken before the rectifier folds half the
    distribution onto 0); a model without batch norm gets every ``nn.Linear`` but the last (the
    hidden units before their ReLU; the last one holds the logits).
    """
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if norms:
        return norms
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ValueError(
            f"{type(model).__name__} has no BatchNorm2d and no hidden Linear layer to default to; "
            "declare the layers to hook (names from model.named_modules())"
        )
    return linears[:-1]


def role_models(base: nn.Module, adapted: nn.Module, model_spec: Mapping[str, Any], seed: int) -> dict[str, nn.Module]:
    """The declared roles (:data:`MODEL_ROLES`): phase 02's model, phase 02b's, and the architecture seeded anew."""
    init = init_model(
        model_spec["name"],
        model_spec["num_classes"],
        seed,
        input_shape=tuple(model_spec["input_shape"]),
        **model_spec.get("kwargs", {}),
    )
    return {"base": base.eval(), "adapted": adapted.eval(), "init": init}


@dataclass(frozen=True)
class ActivationConfig:
    """Phase 03's typed config (``phase.config``), validated when built: the model roles, the hooked layers
    (empty: the architecture's default), the sigma floor and spike threshold, and the batch and sentence counts."""

    roles: tuple[str, ...] = field(default=("base", "adapted"), metadata=param("model_roles"))
    layers: tuple[str, ...] = ()
    eps: float = DEFAULT_EPS
    theta: float = DEFAULT_THETA
    stats_batch_size: int = 256
    transformer_sentences: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        roles = self.roles
        if isinstance(roles, str) or not roles or len(set(roles)) != len(roles):
            raise ValueError(
                f"model_roles must be a non-empty list of distinct roles, got {roles!r}; "
                f"declared roles: {', '.join(map(repr, MODEL_ROLES))}"
            )
        unknown = [r for r in roles if r not in MODEL_ROLES]
        if unknown:
            raise ValueError(f"unknown model role(s) {unknown}; declared roles: {', '.join(map(repr, MODEL_ROLES))}")
        if isinstance(self.layers, str) or not all(isinstance(n, str) and n for n in self.layers):
            raise ValueError(
                f"layers must be a list of module names (empty: the architecture's default), got {self.layers!r}"
            )
        _check_eps_theta(self.eps, self.theta)
        if self.stats_batch_size < 1 or self.transformer_sentences < 0:
            raise ValueError(
                f"need stats_batch_size >= 1 and transformer_sentences >= 0 (0: skip), got "
                f"{self.stats_batch_size} and {self.transformer_sentences}"
            )


def check_params(params: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> ActivationConfig:
    """Phase 03's precheck: its typed config, before any forward pass."""
    return typed_config(ActivationConfig, dict(params))


def resolve_role(models: Mapping[str, nn.Module | None], role: str) -> nn.Module:
    """The model declared for ``role``; unknown roles and missing models are errors."""
    if role not in models:
        raise ValueError(f"unknown role {role!r}; declared roles: {', '.join(sorted(models)) or '(none)'}")
    if not isinstance(models[role], nn.Module):
        raise ValueError(
            f"model missing for role {role!r} (got {type(models[role]).__name__}); "
            "load the trained checkpoint or build the init model before computing statistics"
        )
    return models[role]


def save_stats(stats: ActivationStats, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``calibration_stats.npz`` and ``rate_targets.json`` into ``out_dir`` (atomic, deterministic)."""
    out_dir = Path(out_dir)
    npz = atomic.save_npz(
        out_dir / STATS_FILE,
        mu=stats.mu,
        sigma=stats.sigma,
        mask=stats.mask,
        widths=stats.widths,
        layer_names=np.array(stats.layer_names, dtype=str),
        sample_counts=stats.sample_counts,
        eps=np.float64(stats.eps),
        clamp_counts=stats.clamp_counts,
    )
    targets = atomic.write_json(
        out_dir / TARGETS_FILE,
        {
            "r_star": {d: stats.r_star[d] for d in SPIKE_DEFINITIONS},
            "theta": stats.theta,
            "eps": stats.eps,
            "layer_names": stats.layer_names,
            "role": stats.role,
            "slice_sha256": stats.slice_sha256,
        },
    )
    return npz, targets


def stats_for_roles(
    out: Callable[[str], Path],
    roles: Mapping[str, nn.Module],
    layers: Sequence[str],
    images: np.ndarray,
    indices: np.ndarray,
    config: ActivationConfig,
    prefix: str = "",
) -> dict[str, ActivationStats]:
    """Phase 03's step: statistics of each role's model over the slice, saved to ``<prefix><role>/`` through
    ``out(name) -> path`` (``phase.out``), each logged with its clamp counts (a NaN/Inf raises naming the layer);
    batch size, eps and theta from phase 03's ``config``."""
    by_role = {}
    for role, model in roles.items():
        stats = image_activation_stats(
            model,
            layers,
            images,
            indices,
            role=role,
            batch_size=config.stats_batch_size,
            eps=config.eps,
            theta=config.theta,
        )
        save_stats(stats, out(f"{prefix}{role}/{STATS_FILE}").parent)
        clamped = dict(zip(layers, stats.clamp_counts.tolist()))
        finite = bool(np.isfinite(stats.mu).all() and np.isfinite(stats.sigma).all())
        samples = dict(zip(layers, stats.sample_counts.tolist()))
        fields = {"role": role, "clamp_counts": clamped, "finite": finite, "sample_counts": samples}
        log.info("activation_stats", extra={"fields": fields})
        print(f"{role}: every hooked activation finite; units clamped to eps per layer: {clamped}")
        by_role[role] = stats
    return by_role


def plot_rates(stats_by_role: Mapping[str, ActivationStats]) -> Figure:
    """Per-layer rate targets: one panel per spike definition, roles as side-by-side bars."""
    roles = list(stats_by_role)
    if not roles:
        raise ValueError("plot_rates needs at least one role's statistics")
    names = stats_by_role[roles[0]].layer_names
    if any(s.layer_names != names for s in stats_by_role.values()):
        raise ValueError("all roles must share the same layers to be compared side by side")
    fig = Figure(figsize=(max(6.0, 1.2 * len(names)), 3.6), layout="constrained")
    axes = fig.subplots(1, len(SPIKE_DEFINITIONS), sharey=True)
    x, bar = np.arange(len(names)), 0.8 / len(roles)
    for ax, definition in zip(axes, SPIKE_DEFINITIONS):
        for i, role in enumerate(roles):
            ax.bar(x + (i - (len(roles) - 1) / 2) * bar, stats_by_role[role].r_star[definition], bar, label=role)
        theta = stats_by_role[roles[0]].theta
        ax.set_title(f"z-score > {theta:g}" if definition == "zscore" else "a > 0")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("rate target r*")
    axes[-1].legend(title="role")
    return fig


def plot_sigma(stats: ActivationStats) -> Figure:
    """Distribution of per-unit sigma in each layer (log scale), with the eps floor."""
    return plot_sigma_by_role({stats.role: stats})


def plot_sigma_by_role(stats_by_role: Mapping[str, ActivationStats]) -> Figure:
    """Per-unit sigma in each layer (log scale, eps floor dashed): one panel per role, shared y axis."""
    if not stats_by_role:
        raise ValueError("plot_sigma_by_role needs at least one role's statistics")
    widest = max(len(s.layer_names) for s in stats_by_role.values())
    fig = Figure(figsize=(max(6.0, 0.9 * widest) * len(stats_by_role), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(stats_by_role), sharey=True))
    for ax, stats in zip(axes, stats_by_role.values()):
        ax.boxplot([stats.sigma[layer, :w] for layer, w in enumerate(stats.widths)], showfliers=True)
        ax.axhline(stats.eps, color="tab:red", linestyle="--", linewidth=1, label=f"eps = {stats.eps:g}")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(1, len(stats.layer_names) + 1), stats.layer_names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"sigma per layer ({stats.role})")
        ax.legend()
    axes[0].set_ylabel("per-unit sigma")
    return fig


def stats_table(stats_by_role: Mapping[str, ActivationStats]):
    """One row per layer: width, then r* for each spike definition and the clamp count, per role."""
    import pandas as pd

    first = next(iter(stats_by_role.values()), None)
    if first is None or any(s.layer_names != first.layer_names for s in stats_by_role.values()):
        raise ValueError("stats_table needs at least one role, all with the same layers")
    columns = {"layer": first.layer_names, "width": first.widths}
    for role, stats in stats_by_role.items():
        for definition in SPIKE_DEFINITIONS:
            columns[f"r* {definition} ({role})"] = stats.r_star[definition]
        columns[f"clamped ({role})"] = stats.clamp_counts
    return pd.DataFrame(columns)
