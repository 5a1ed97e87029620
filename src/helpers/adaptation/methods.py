"""Domain adaptation of a trained classifier: LoRA (HF PEFT), AdaBN and TENT, merged and load-back checked.

Modes (:data:`MODES`):

* ``none``: the model passes through unchanged (the phase records that it did);
* ``lora`` (labeled): low-rank adapters from HF PEFT on the model's ``Conv2d`` and ``Linear``
  layers (``target_modules``; empty: all of them), optionally with the batch-norm layers trained
  too (``bn_trainable``, PEFT's ``modules_to_save``; their statistics are then first re-estimated on
  the target images, as ``adabn``, and travel in the adapter), then the adapters train with AdamW under a one-cycle
  schedule, seeded and deterministic on one machine (:func:`helpers.training.deterministic_cpu`).
  ``merge_and_unload`` folds the adapters into the base weights: the merged model has the
  original architecture, so the checkpoint loads into a fresh ``model_artifact.build``.
* ``adabn`` (label-free, Li et al. 2016): every batch-norm layer's running mean and variance are
  re-estimated on the target images (cumulative average over one pass, train-mode forward, no
  gradients); nothing else changes.
* ``tent`` (label-free, Wang et al. 2021): starting from ``adabn``, the batch-norm affine
  parameters (and only those) minimise the mean prediction entropy of each target batch, with
  batch statistics in the forward pass (Adam, as in the paper's CIFAR setting); the running
  statistics are re-estimated once more at the end so the exported model is a plain eval-mode
  network.

LoRA's objective (``lora_objective``, :data:`LORA_OBJECTIVES`) makes LoRA itself label-free, as
the unlabeled mode of ExPLoRA-style extended adaptation needs (a target domain with no labels):

* ``supervised``: cross-entropy on the labeled target train images (above);
* ``shot`` (label-free, Liang et al. 2020, "Do we really need to access the source data?"): the
  source *hypothesis* (the last ``Linear``, the classifier) stays fixed and LoRA adapts the
  feature extractor by information maximisation -- mean prediction entropy minus the entropy of
  the mean prediction (confident *and* diverse predictions) -- plus ``SHOT_BETA`` x cross-entropy
  on pseudo-labels from SHOT's weighted-centroid clustering of the penultimate features,
  recomputed at the start of every epoch (the batch-norm statistics are re-estimated on the target
  images after every epoch, as TENT does at its end). It is the method of that paper for exactly this
  setting (a source-trained small CNN, unlabeled target images), and its diversity term is what
  keeps entropy minimisation from collapsing onto a few classes;
* ``entropy``: TENT's loss (mean prediction entropy) trained through the LoRA parameters instead
  of the batch-norm affine ones (statistics re-estimated likewise): the ablation of ``shot`` without
  diversity or pseudo-labels.

**Collapse guard** (every label-free mode and objective): the *effective number of predicted
classes* on the fitting images -- ``exp`` of the entropy of the argmax histogram; K for a uniform
spread over K classes, 1 when every image gets one class -- is measured with the unadapted model
and after every epoch (after the re-estimation for ``adabn``). If it falls below
``COLLAPSE_FRACTION`` of the unadapted model's, :func:`adapt` raises :class:`CollapseError` with
the numbers, before anything is merged or saved. The mean prediction entropy is recorded beside it.

The label-free modes never take labels: :func:`adapt` refuses them. The phase also never hands
them any (the graph declares the inputs of each mode; see ``helpers.run.graph``).
"""

from __future__ import annotations

import copy
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from helpers.data.datasets import preprocess
from helpers.data.deployment import FILE, load_array
from helpers.models import import_noise
from helpers.models.training import augment_batch, deterministic_cpu, fit_epochs
from helpers.run.params import param, typed_config

import_noise.quiet()  # peft imports torchao
log = logging.getLogger(__name__)  # epoch events go to the open phase's log (helpers.run.phase)
MODES = ("none", "lora", "adabn", "tent")  # "none" passes the model through and reads no target data
LABEL_FREE = ("adabn", "tent")  # modes that fit on target images without labels
LORA_OBJECTIVES = ("supervised", "shot", "entropy")  # "supervised" alone reads the target train labels
SHOT_BETA = 0.3  # weight of the pseudo-label cross-entropy (SHOT's beta for digits and Office)
COLLAPSE_FRACTION = 0.5  # fail when the effective number of predicted classes halves
ADAPTABLE = (nn.Conv2d, nn.Linear)  # layer types LoRA adapts
History = dict[str, list[float]]


class AdaptationError(ValueError):
    """Adaptation parameters or a model that cannot be adapted as asked (raised before any training)."""


class MergeParityError(RuntimeError):
    """The merged checkpoint, loaded back, does not reproduce the adapter model."""


class CollapseError(RuntimeError):
    """A label-free adaptation collapsed its predictions onto few classes (raised before any merge)."""


@dataclass(frozen=True)
class AdaptConfig:
    """Phase 02b's typed config (``phase.config``): validated when built, so every holder of one has a valid mode.

    What a mode means is derived here and nowhere else: whether it fits at all (``fits``), whether without labels
    (``label_free``) and so which of the graph's input kinds the phase reads (``reads``: the base model, the
    target train images, their labels)."""

    mode: str = field(metadata=param("adaptation"))
    epochs: int = field(default=3, metadata=param("adapt_epochs"))
    batch_size: int = field(default=64, metadata=param("adapt_batch_size"))
    lr: float = field(default=0.01, metadata=param("adapt_lr"))
    rank: int = field(default=4, metadata=param("lora_rank"))
    alpha: float = field(default=8.0, metadata=param("lora_alpha"))
    dropout: float = field(default=0.0, metadata=param("lora_dropout"))
    # LoRA: module names (empty: every Conv2d and Linear)
    target_modules: tuple[str, ...] = field(default=(), metadata=param("lora_target_modules"))
    bn_trainable: bool = field(default=True, metadata=param("lora_bn_trainable"))  # LoRA: train the BN affine too
    augment: bool = field(default=False, metadata=param("adapt_augment"))  # LoRA: random flip and crop (CIFAR-10)
    weight_decay: float = 0.0
    max_images: int = field(default=0, metadata=param("adapt_images"))  # fit on the first this many (0: all)
    objective: str = field(default="supervised", metadata=param("lora_objective"))  # LoRA: or label-free shot / entropy

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AdaptationError(f"unknown adaptation mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.objective not in LORA_OBJECTIVES:
            raise AdaptationError(
                f"unknown lora_objective {self.objective!r}; choose one of {', '.join(LORA_OBJECTIVES)} "
                "(supervised reads the target train labels; shot and entropy are label-free)"
            )
        if not self.fits:
            return
        if self.epochs < 1 or self.batch_size < 2 or not self.lr > 0 or self.max_images < 0:
            raise AdaptationError(
                f"need adapt_epochs >= 1, adapt_batch_size >= 2 (batch statistics), adapt_lr > 0 and "
                f"adapt_images >= 0; got {self.epochs}, {self.batch_size}, {self.lr}, {self.max_images}"
            )
        if self.mode == "lora":
            if self.rank <= 0:
                raise AdaptationError(f"lora_rank must be a positive integer, got {self.rank}")
            if not self.alpha > 0:
                raise AdaptationError(f"lora_alpha must be > 0, got {self.alpha}")
            if not 0.0 <= self.dropout < 1.0:
                raise AdaptationError(f"lora_dropout must be in [0, 1), got {self.dropout}")

    @property
    def fits(self) -> bool:
        """Whether the mode fits anything on the target images (every mode but ``none``)."""
        return self.mode != "none"

    @property
    def label_free(self) -> bool:
        """Whether the adaptation fits without labels (adabn, tent, or LoRA with a label-free objective)."""
        return self.mode in LABEL_FREE or (self.mode == "lora" and self.objective != "supervised")

    @property
    def reads(self) -> tuple[str, ...]:
        """The kinds of input (``helpers.run.graph``'s 02b ``inputs``) this mode reads before the phase seals."""
        return (
            ("model",) + (("images",) if self.fits else ()) + (("labels",) if self.fits and not self.label_free else ())
        )

    @property
    def name(self) -> str:
        """The mode as messages name it: ``tent``, ``lora (shot)``."""
        return f"lora ({self.objective})" if self.mode == "lora" else self.mode


@dataclass
class Adapted:
    """What :func:`adapt` returns: the adapted model before and after the merge, and the adapter alone."""

    adapter_model: nn.Module  # LoRA: the PEFT model with its adapters; otherwise the adapted model itself
    merged: nn.Module  # the base architecture with the adaptation folded into its weights
    adapter_state: dict[str, torch.Tensor]  # the adapted tensors only (LoRA A/B, BN parameters and statistics)
    adapter_config: dict[str, Any]
    history: History = field(default_factory=dict)
    trainable: int = 0
    total: int = 0
    collapse_guard: dict[str, Any] = field(default_factory=dict)  # label-free: the guard's measurements


def check_params(params: dict, config: dict | None = None) -> AdaptConfig:
    """Phase 02b's precheck: its typed config (``calib run`` builds it before any kernel, ``Phase.open`` keeps it as
    ``phase.config``); checks that need the model are :func:`check_model`'s."""
    return typed_config(AdaptConfig, params)


def fitting_data(config: AdaptConfig, read: Callable[[str], Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(images, labels)`` the mode fits on, read from phase 02a's target train files through ``read(name) ->
    path`` (``phase.input`` of 02a): None for what the mode does not read (``config.reads``)."""

    def load(kind: str) -> np.ndarray | None:
        return (
            load_array(read(FILE.format(domain="target", split="train", kind=kind))) if kind in config.reads else None
        )

    return load("images"), load("labels")


def bn_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def adaptable_layers(model: nn.Module) -> list[str]:
    """Names of the layers LoRA can adapt (``Conv2d`` and ``Linear``), in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, ADAPTABLE)]


def lora_targets(model: nn.Module, target_modules: tuple[str, ...] | list[str]) -> list[str]:
    """The full module names ``target_modules`` selects (empty: every adaptable layer); unknown names raise."""
    layers = adaptable_layers(model)
    if not target_modules:
        return layers
    chosen, unknown = [], []
    for target in target_modules:
        hits = [name for name in layers if name == target or name.endswith("." + target)]
        (chosen.extend(hits) if hits else unknown.append(target))
    if unknown:
        raise AdaptationError(
            f"unknown LoRA target module(s) {', '.join(map(repr, unknown))}: {type(model).__name__} "
            f"has these Conv2d/Linear layers: {', '.join(layers)}"
        )
    return [name for name in layers if name in chosen]


def check_model(model: nn.Module, config: AdaptConfig) -> list[str]:
    """Model-dependent checks before any training; returns the LoRA target layers (empty otherwise)."""
    if config.mode in LABEL_FREE or (config.mode == "lora" and config.bn_trainable):
        if not bn_layers(model):
            need = "adaptation=lora with lora_bn_trainable=False" if config.mode == "lora" else "adaptation=lora"
            raise AdaptationError(
                f"{config.mode} adapts batch-norm layers, and {type(model).__name__} has none; "
                f"use {need} (or adaptation=none)"
            )
    return config_targets(model, config) if config.mode == "lora" else []


def classifier_head(model: nn.Module) -> str:
    """The name of the model's last ``Linear`` layer: the classifier (SHOT's fixed source hypothesis)."""
    heads = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise AdaptationError(
            f"lora_objective=shot keeps the classifier (the last Linear layer) fixed, and "
            f"{type(model).__name__} has no Linear layer; use lora_objective=entropy"
        )
    return heads[-1]


def config_targets(model: nn.Module, config: AdaptConfig) -> list[str]:
    """The layers LoRA adapts: ``target_modules`` (empty: every adaptable layer, but for ``shot`` the
    classifier head, which SHOT keeps fixed as the source hypothesis)."""
    targets = lora_targets(model, config.target_modules)
    if config.objective == "shot" and not config.target_modules:
        head = classifier_head(model)
        targets = [name for name in targets if name != head]
    return targets


# -- the label-free modes ---------------------------------------------------------------------
@torch.no_grad()
def adabn(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> nn.Module:
    """Re-estimate every batch-norm layer's running statistics on ``images`` (one pass, exact average).

    In a PEFT model the frozen ``original_module`` copies of trained batch-norm layers are left alone:
    the forward pass runs the trained copies (``modules_to_save``), and only those are re-estimated."""
    layers = {name: m for name, m in bn_layers(model).items() if ".original_module" not in name}
    saved = {name: m.momentum for name, m in layers.items()}
    for m in layers.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the pass
    model.train()
    try:
        for s in range(0, len(images), batch_size):
            model(torch.from_numpy(preprocess(images[s : s + batch_size])))
    finally:
        for name, m in layers.items():
            m.momentum = saved[name]
        model.eval()
    return model


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax predictions."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1).mean()


def _fit_epochs(
    model,
    images,
    config: AdaptConfig,
    step,
    optimizer,
    generator,
    progress,
    after_epoch,
    before_epoch=None,
    *,
    one_cycle: bool,
) -> None:
    """``helpers.models.training.fit_epochs`` over the target ``images`` with ``config``'s epochs and batch size;
    its progress events are named by the mode (``tent``, ``lora shot``)."""
    fit_epochs(
        model,
        len(images),
        step,
        optimizer,
        name=f"lora {config.objective}" if config.mode == "lora" else config.mode,
        generator=generator,
        epochs=config.epochs,
        batch_size=config.batch_size,
        one_cycle=one_cycle,
        bar=f"{config.mode} ",
        progress=progress,
        hint="lower adapt_lr, or check the model's weights and the target images",
        before_epoch=before_epoch,
        after_epoch=after_epoch,
    )


def _tent(
    model: nn.Module,
    images: torch.Tensor,
    config: AdaptConfig,
    generator: torch.Generator,
    progress: bool,
    on_epoch_end,
    guard: CollapseGuard,
) -> History:
    layers = bn_layers(model)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for m in layers.values() for p in (m.weight, m.bias) if p is not None]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
    history: History = {"epoch": [], "entropy": []}

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, float]:  # batch statistics in the forward pass, as TENT does
        return entropy(model(torch.from_numpy(preprocess(images[idx].numpy())))), 0.0

    def after_epoch(epoch: int, mean_entropy: float, _: float) -> None:
        history["epoch"].append(epoch)
        history["entropy"].append(mean_entropy)
        guard.check(model, epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history, model)

    _fit_epochs(model, images, config, step, optimizer, generator, progress, after_epoch, one_cycle=False)  # as TENT
    for p in model.parameters():
        p.requires_grad_(True)
    return history


# -- the collapse guard -----------------------------------------------------------------------------
GUARD_IMAGES = 10_000  # the guard measures on (at most) the first this many fitting images


@torch.no_grad()
def prediction_spread(model: nn.Module, images: np.ndarray, batch_size: int = 500) -> dict[str, float]:
    """How spread the model's predictions on ``images`` are (eval mode; the model's mode is restored).

    ``effective_classes``: exp of the entropy of the predicted-class histogram (K for predictions
    spread evenly over K classes, 1 when every image gets one class); ``largest_class_share``: the
    share of the most predicted class; ``mean_entropy``: mean prediction entropy in nats.
    """
    was_training = model.training
    model.eval()
    counts, entropy_sum = None, 0.0
    try:
        for s in range(0, len(images), batch_size):
            logits = model(torch.from_numpy(preprocess(images[s : s + batch_size]))).float()
            entropy_sum += float(entropy(logits)) * len(logits)
            found = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
            counts = found if counts is None else counts + found
    finally:
        model.train(was_training)
    share = counts.double() / counts.sum()
    spread = share[share > 0]
    return {
        "effective_classes": float(torch.exp(-(spread * spread.log()).sum())),
        "largest_class_share": float(share.max()),
        "mean_entropy": entropy_sum / len(images),
    }


class CollapseGuard:
    """Measures the prediction spread before adaptation and after each epoch; raises on a collapse."""

    def __init__(self, model: nn.Module, images: np.ndarray, what: str):
        self.images, self.what = images[:GUARD_IMAGES], what
        self.before = prediction_spread(model, self.images)
        self.limit = COLLAPSE_FRACTION * self.before["effective_classes"]
        self.after: list[dict[str, float]] = []

    def check(self, model: nn.Module, epoch: int, stage: str = "epoch") -> None:
        """Measure after ``epoch`` (``stage``: "epoch", or "final" for the model handed on); raise on a collapse."""
        now = prediction_spread(model, self.images)
        self.after.append({"epoch": epoch, "stage": stage, **now})
        if now["effective_classes"] < self.limit:
            when = f"epoch {epoch}" if stage == "epoch" else "adaptation (statistics re-estimated)"
            raise CollapseError(
                f"{self.what} collapsed its predictions after {when}: on {len(self.images)} target "
                f"train images it predicts {now['effective_classes']:.2f} effective classes (the unadapted "
                f"model {self.before['effective_classes']:.2f}; the limit is {COLLAPSE_FRACTION:g} of that, "
                f"{self.limit:.2f}), the largest class takes {now['largest_class_share']:.1%} of the "
                f"predictions (before {self.before['largest_class_share']:.1%}), mean entropy "
                f"{now['mean_entropy']:.3f} nats (before {self.before['mean_entropy']:.3f}); nothing was merged "
                "or saved. Lower adapt_lr or adapt_epochs"
                + (
                    ""
                    if self.what == "lora (shot)"
                    else ", or use lora_objective=shot (its diversity term counters collapse)"
                )
            )

    def record(self) -> dict[str, Any]:
        return {
            "measure": "effective number of predicted classes, exp(entropy of the argmax histogram)",
            "images": len(self.images),
            "fraction": COLLAPSE_FRACTION,
            "limit": self.limit,
            "before": self.before,
            "after": self.after,
        }


# -- LoRA's objectives ------------------------------------------------------------------------------
def information_maximisation(logits: torch.Tensor) -> torch.Tensor:
    """SHOT's IM loss: mean prediction entropy minus the entropy of the mean prediction (nats)."""
    p = F.softmax(logits.float(), dim=1)
    mean = p.mean(0)
    return entropy(logits) + (mean * torch.log(mean + 1e-5)).sum()


@torch.no_grad()
def shot_pseudo_labels(model: nn.Module, head: nn.Module, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
    """SHOT's self-supervised pseudo-labels: the penultimate features (the head's input, with a 1
    appended, L2-normalised), clustered to class centroids weighted by the predictions, then one
    round with hard assignments; each image gets its nearest centroid by cosine similarity."""
    features: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _, args: features.append(args[0].detach().flatten(1).double()))
    was_training = model.training
    model.eval()
    try:
        probs = torch.cat(
            [
                F.softmax(model(torch.from_numpy(preprocess(images[s : s + batch_size]))).double(), dim=1)
                for s in range(0, len(images), batch_size)
            ]
        )
    finally:
        hook.remove()
        model.train(was_training)
    f = torch.cat(features)
    f = F.normalize(torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1), dim=1)
    weights = probs
    for _ in range(2):  # soft centroids, then one round with hard assignments
        centroids = F.normalize(weights.T @ f / (weights.sum(0)[:, None] + 1e-8), dim=1)
        labels = (f @ centroids.T).argmax(1)
        weights = F.one_hot(labels, probs.shape[1]).double()
    return labels


# -- LoRA ---------------------------------------------------------------------------------------
def lora_config(model: nn.Module, config: AdaptConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config_targets(model, config),
        bias="none",
        modules_to_save=sorted(bn_layers(model)) if config.bn_trainable else None,
    )


def lora_model(model: nn.Module, config: AdaptConfig) -> nn.Module:
    """A copy of ``model`` wrapped by PEFT with fresh LoRA adapters (seed torch first: A is drawn at random)."""
    from peft import get_peft_model

    return get_peft_model(copy.deepcopy(model), lora_config(model, config))


def adapter_bytes(peft_model: nn.Module) -> bytes:
    from peft import get_peft_model_state_dict

    buffer = io.BytesIO()
    torch.save(get_peft_model_state_dict(peft_model), buffer)
    return buffer.getvalue()


def load_adapter(base: nn.Module, config: AdaptConfig, adapter: bytes) -> nn.Module:
    """A fresh PEFT model on ``base`` with the saved adapter weights loaded; raises unless every tensor loads."""
    from peft import set_peft_model_state_dict

    state = torch.load(io.BytesIO(adapter), map_location="cpu", weights_only=True)
    model = lora_model(base, config)
    result = set_peft_model_state_dict(model, state)
    missing = [k for k in result.missing_keys if "lora_" in k or "modules_to_save" in k]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise AdaptationError(
            f"the LoRA adapter does not load back into {type(base).__name__}: missing "
            f"{missing[:6]}, unexpected {unexpected[:6]}; check lora_target_modules"
        )
    return model


def check_adapter_roundtrip(model: nn.Module, config: AdaptConfig, seed: int) -> None:
    """Before training: a fresh adapter saved, loaded into another copy, must give back every tensor."""
    torch.manual_seed(seed)
    first = lora_model(model, config)
    with torch.no_grad():
        for name, p in first.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)  # B starts at zero; perturb it so the comparison below means something
    saved = adapter_bytes(first)
    second = load_adapter(model, config, saved)
    a, b = (dict(m.named_parameters()) for m in (first, second))
    bad = [k for k in a if "lora_" in k and not torch.equal(a[k], b[k])]
    if bad:
        raise AdaptationError(
            f"the LoRA adapter does not load back: {len(bad)} tensor(s) differ after a "
            f"save/load round trip (first: {bad[0]})"
        )


def _lora_fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    config: AdaptConfig,
    generator: torch.Generator,
    progress: bool,
    on_epoch_end,
    guard: CollapseGuard | None = None,
    head: nn.Module | None = None,
) -> History:
    """AdamW under a one-cycle schedule on ``config.objective``: cross-entropy on ``labels``
    (supervised), or label-free (``labels`` is None): SHOT's IM + pseudo-label loss (``head``: the
    classifier, whose input are the features SHOT clusters), or entropy."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = len(images) // config.batch_size
    supervised = config.objective == "supervised"
    tracked = "train_acc" if supervised else "entropy"
    history: History = {"epoch": [], "loss": [], tracked: []}
    targets = None

    def before_epoch(epoch: int) -> None:
        nonlocal targets
        if config.objective == "shot":
            targets = shot_pseudo_labels(model, head, images.numpy())

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        batch = augment_batch(images[idx], generator) if config.augment else images[idx]
        logits = model(torch.from_numpy(preprocess(batch.numpy())))
        if supervised:
            return F.cross_entropy(logits, labels[idx]), int((logits.argmax(1) == labels[idx]).sum())
        loss = entropy(logits) if config.objective == "entropy" else information_maximisation(logits)
        if config.objective == "shot":
            loss = loss + SHOT_BETA * F.cross_entropy(logits, targets[idx])
        return loss, float(entropy(logits.detach())) * len(idx)

    def after_epoch(epoch: int, loss: float, total: float) -> None:
        history["epoch"].append(epoch)
        history["loss"].append(loss)
        history[tracked].append(total / (steps * config.batch_size))
        if not supervised and config.bn_trainable:  # as TENT: exact statistics of the model as it now is
            adabn(model, images.numpy())
        if guard is not None:
            guard.check(model, epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history, model)

    _fit_epochs(model, images, config, step, optimizer, generator, progress, after_epoch, before_epoch, one_cycle=True)
    model.eval()
    return history


# -- the one entry point --------------------------------------------------------------------------
def adapt(
    model: nn.Module,
    config: AdaptConfig,
    images: np.ndarray | None,
    labels: np.ndarray | None = None,
    *,
    seed: int,
    num_threads: int | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, History, nn.Module], None] | None = None,
) -> Adapted:
    """Adapt ``model`` (a fresh copy is made) to the target ``images`` (uint8 NHWC); labels for supervised LoRA only.

    ``on_epoch_end(epoch, history, model)`` is called after each LoRA/TENT epoch with the model being trained.
    """
    check_model(model, config)
    model = copy.deepcopy(model).eval()
    total = sum(p.numel() for p in model.parameters())
    if not config.fits:
        if images is not None or labels is not None:
            raise AdaptationError("adaptation=none passes the model through: it takes no target data")
        return Adapted(model, model, {}, {"mode": "none"}, {}, 0, total)
    if config.label_free and labels is not None:
        raise AdaptationError(f"{config.name} is label-free: it must not be given labels")
    if not config.label_free and labels is None:
        raise AdaptationError("lora with lora_objective=supervised trains on labeled target images: pass their labels")
    if config.max_images:
        images, labels = images[: config.max_images], None if labels is None else labels[: config.max_images]
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) < 2:
        raise AdaptationError(
            f"target images must be uint8 NHWC with at least 2 images, got {images.dtype} {images.shape}"
        )
    if labels is not None and np.asarray(labels).shape != (len(images),):
        raise AdaptationError(f"{len(images)} target images but labels of shape {np.asarray(labels).shape}")
    if not 2 <= config.batch_size <= len(images):
        raise AdaptationError(
            f"adapt_batch_size must be in [2, {len(images)}] (the target images), got {config.batch_size}"
        )
    if config.mode == "lora":
        check_adapter_roundtrip(model, config, seed)  # an adapter that would not load back stops here
    threads = num_threads or len(os.sched_getaffinity(0))
    generator = torch.Generator().manual_seed(seed)
    with deterministic_cpu(seed, threads):
        guard = CollapseGuard(model, images, config.name) if config.label_free else None
        if config.mode != "lora" or config.bn_trainable:  # LoRA keeps the statistics its adapter cannot carry
            adabn(model, images)
        history: History = {}
        if config.mode == "tent":
            history = _tent(model, torch.from_numpy(images), config, generator, progress, on_epoch_end, guard)
            adabn(model, images)
        if config.mode in LABEL_FREE:
            guard.check(model, config.epochs if config.mode == "tent" else 0, "final")  # statistics re-estimated
            bn_names = {f"{name}.{key}" for name in bn_layers(model) for key in bn_layers(model)[name].state_dict()}
            state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in bn_names}
            trainable = (
                sum(m.weight.numel() + m.bias.numel() for m in bn_layers(model).values())
                if config.mode == "tent"
                else 0
            )
            return Adapted(
                model,
                model,
                state,
                {"mode": config.mode, "batch_norm_layers": sorted(bn_layers(model))},
                history,
                trainable,
                total,
                guard.record(),
            )
        torch.manual_seed(seed)
        peft_model = lora_model(model, config)
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        history = _lora_fit(
            peft_model,
            torch.from_numpy(images),
            None if labels is None else torch.from_numpy(np.asarray(labels, np.int64)),
            config,
            generator,
            progress,
            on_epoch_end,
            guard,
            peft_model.get_submodule(f"base_model.model.{classifier_head(model)}")
            if config.objective == "shot"
            else None,
        )
    from peft import get_peft_model_state_dict

    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    peft_config = peft_model.peft_config["default"].to_dict()
    adapter_cfg = {
        "mode": "lora",
        "objective": config.objective,
        "peft": {k: sorted(v) if isinstance(v, set) else v for k, v in peft_config.items()},
    }
    return Adapted(
        peft_model.eval(), merged, state, adapter_cfg, history, trainable, total, guard.record() if guard else {}
    )


def epoch_reporter() -> Callable[[int, History, nn.Module], None]:
    """An ``on_epoch_end`` callback that prints one line per epoch and logs it (an ``adaptation_epoch`` event in
    the phase's log)."""

    def report(epoch: int, history: History, model: nn.Module) -> None:
        values = {k: v[-1] for k, v in history.items() if k != "epoch"}
        print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), flush=True)
        log.info("adaptation_epoch", extra={"fields": {"epoch": epoch, **values}})

    return report
