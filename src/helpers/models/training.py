"""Deterministic CPU training, its learning-curve figure, and model checkpoints.

``train`` runs SGD (Nesterov momentum, weight decay on conv/linear weights only) under a
one-cycle schedule (torch's ``OneCycleLR`` defaults: warm-up over 30% of the steps, cosine
anneal; momentum cycles 0.95 -> 0.85 -> 0.95) with label-smoothed cross-entropy, optionally
with bfloat16 autocast (``precision='bf16'``: about 1.7x faster on CPUs with AVX512-BF16, master
weights stay float32). It is deterministic on a
given machine: torch is seeded, ``torch.use_deterministic_algorithms(True)`` is on, the thread
count is fixed, and shuffling and augmentation draw from one seeded ``torch.Generator`` -- the
same arguments give a byte-identical checkpoint (different thread counts or CPUs may differ in
the last bits). Augmentation (``augment=True``, for CIFAR) is a random horizontal flip and a
random crop from the image zero-padded by 4 pixels, done on whole uint8 NHWC batches before
``helpers.data.preprocess``. With ``low_res=(size, epochs)`` the first ``epochs`` epochs crop
``size`` x ``size`` instead (progressive resizing: those epochs cost about (size/H)^2 of a full
one; ``benchmarks/bench_train_cifar.py`` measures what it buys); the model must accept that
size (convolutions, then a global pool). The model trains in channels-last memory format and
is returned contiguous, in eval mode.

A non-finite loss stops training with ``FloatingPointError`` naming the epoch and the step.
The loop itself (shuffle, batches, optimizer step, non-finite check, progress) is :func:`fit_epochs`, the one
every training in the project runs through: phase 02's here and phase 02b's LoRA and TENT
(``helpers.adaptation.methods``) each give it their own batch loss.

Checkpoints are plain state dicts written atomically (``save_checkpoint``) and read with
``torch.load(weights_only=True)`` (``load_checkpoint``), which names mismatching keys.

Progress shows two ways while a step runs: a tqdm bar per epoch in the kernel (``progress=True``: a text bar
on stderr, redrawn in place in JupyterLab), and :class:`BatchProgress`'s ``progress`` events in the phase's
log (every :data:`PROGRESS_EVERY_S` seconds and at each epoch's end), from which ``calib run`` draws its
own bar in the terminal, under papermill's cell bar (``helpers.run.console``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from helpers.data.datasets import check_image_batch, preprocess
from helpers.metrics.classification import accuracy, check_labels
from helpers.models.architectures import predict_logits
from helpers.run import atomic

CROP_PADDING = 4
PRECISIONS = ("fp32", "bf16")
History = dict[str, list[float]]
PROGRESS_EVERY_S = 2.0  # at most one progress event per this many seconds within an epoch
log = logging.getLogger(__name__)  # progress events go to the open phase's log (helpers.run.phase)


class BatchProgress:
    """Where a long loop over batches is, for the phase's log: a ``progress`` event (``step``, with ``epoch`` of
    ``epochs``, ``steps`` batches per epoch and the epoch's mean ``loss`` so far) on the first batch, then at most
    every ``every`` seconds, and on each epoch's last batch, so that a reader of the log sees a long epoch move."""

    def __init__(self, step: str, epochs: int, steps: int, every: float = PROGRESS_EVERY_S):
        self.fields, self.every, self.last = {"step": step, "epochs": epochs, "steps": steps}, every, None

    def __call__(self, epoch: int, batch: int, loss: float) -> None:
        now = time.monotonic()
        if self.last is None or now - self.last >= self.every or batch == self.fields["steps"]:
            self.last = now
            log.info("progress", extra={"fields": {**self.fields, "epoch": epoch, "batch": batch, "loss": loss}})


@contextlib.contextmanager
def deterministic_cpu(seed: int, num_threads: int) -> Iterator[None]:
    """Seed torch, force deterministic algorithms and a fixed thread count; restore them after."""
    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def augment_batch(images: torch.Tensor, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
    """Per image: horizontal flip with p=0.5, then a random crop of the 4-pixel zero-padded image.

    ``images`` is a uint8 NHWC batch; the crop is HxW (the result has the batch's shape and
    dtype) or, with ``size``, ``size`` x ``size`` from anywhere in the padded image.
    """
    n, height, width, _ = images.shape
    crop_h, crop_w = (height, width) if size is None else (size, size)
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(2), images)
    padded = F.pad(images, (0, 0, CROP_PADDING, CROP_PADDING, CROP_PADDING, CROP_PADDING))
    top = torch.randint(0, height + 2 * CROP_PADDING - crop_h + 1, (n,), generator=generator)
    left = torch.randint(0, width + 2 * CROP_PADDING - crop_w + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(crop_h))[:, :, None]
    cols = (left[:, None] + torch.arange(crop_w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols]


def _check_split(images: np.ndarray, labels: np.ndarray, num_classes: int, name: str) -> None:
    if labels.shape != (len(images),):
        raise ValueError(f"{name}: {len(images)} images but labels of shape {labels.shape}; pass one label per image")
    check_labels(labels, num_classes, f"{name}_labels")


def _check_images(images: np.ndarray, name: str) -> None:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{name}_images must be a numpy array, got {type(images).__name__}")
    check_image_batch(images, what=f"{name}_images")


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay on conv/linear weights, not on biases or BN affine."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)  # OneCycleLR then cycles momentum


def train(
    model: nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    augment: bool = False,
    label_smoothing: float = 0.0,
    weight_decay: float = 5e-4,
    precision: str = "fp32",
    num_threads: int | None = None,
    low_res: tuple[int, int] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, History], None] | None = None,
) -> tuple[nn.Module, History]:
    """Train ``model`` in place on uint8 NHWC images; returns (model in eval mode, history).

    ``lr`` is the one-cycle schedule's peak. Each epoch shuffles the training set and drops the
    last partial batch. ``history`` holds per-epoch lists: ``epoch``, ``loss`` (mean training
    loss), ``train_acc`` (on the augmented batches seen), ``val_acc``. ``on_epoch_end(epoch,
    history)`` is called after each epoch (for progress reporting; keep timings out of results).
    ``num_threads`` defaults to the CPUs this process may use; on a machine whose cores are busy
    with other work, ``num_threads=1`` is much faster (OpenMP threads spin while waiting).
    ``progress`` shows a tqdm bar per epoch; the phase's log gets :class:`BatchProgress` events either way.
    """
    _check_images(train_images, "train")
    _check_images(val_images, "val")
    num_classes = predict_logits(model, train_images[:1]).shape[1]
    _check_split(train_images, np.asarray(train_labels), num_classes, "train")
    _check_split(val_images, np.asarray(val_labels), num_classes, "val")
    if epochs < 1 or not 1 <= batch_size <= len(train_images):
        raise ValueError(
            f"need epochs >= 1 and 1 <= batch_size <= {len(train_images)} (the training set size), "
            f"got epochs={epochs}, batch_size={batch_size}"
        )
    if not (lr > 0 and 0.0 <= label_smoothing < 1.0 and weight_decay >= 0):
        raise ValueError(
            f"need lr > 0, 0 <= label_smoothing < 1, weight_decay >= 0; got lr={lr}, "
            f"label_smoothing={label_smoothing}, weight_decay={weight_decay}"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if low_res is not None:
        _check_low_res(model, train_images, low_res, augment, epochs)
    threads = num_threads or len(os.sched_getaffinity(0))
    with deterministic_cpu(seed, threads):
        history = _fit(
            model,
            torch.from_numpy(train_images),
            torch.from_numpy(np.asarray(train_labels, np.int64)),
            val_images,
            np.asarray(val_labels),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            augment=augment,
            label_smoothing=label_smoothing,
            weight_decay=weight_decay,
            precision=precision,
            low_res=low_res or (None, 0),
            progress=progress,
            on_epoch_end=on_epoch_end,
        )
    return model, history


def _check_low_res(model: nn.Module, images: np.ndarray, low_res: tuple[int, int], augment: bool, epochs: int):
    """``low_res`` is (size, epochs) with augmentation on, size within the image, and a model that takes it."""
    size, low_epochs = low_res
    height, width = images.shape[1:3]
    if not augment or not 1 <= size <= min(height, width) or not 1 <= low_epochs <= epochs:
        raise ValueError(
            f"low_res=(size, epochs) needs augment=True, 1 <= size <= {min(height, width)} (the image side) "
            f"and 1 <= epochs <= {epochs}; got {low_res} with augment={augment}"
        )
    try:
        predict_logits(model, np.zeros((1, size, size, images.shape[3]), np.uint8))
    except RuntimeError as err:
        raise ValueError(
            f"low_res: {type(model).__name__} cannot take {size}x{size} inputs ({err}); "
            "choose a size it accepts or train without low_res"
        ) from None


def epoch_logger(epochs: int) -> Callable[[int, History], None]:
    """An ``on_epoch_end`` that logs each epoch's loss and accuracies (an ``epoch`` event in the phase's log)."""

    def on_epoch_end(epoch: int, history: History) -> None:
        fields = {"epoch": epoch, "epochs": epochs, **{k: history[k][-1] for k in ("loss", "train_acc", "val_acc")}}
        log.info("epoch", extra={"fields": fields})

    return on_epoch_end


Step = Callable[[torch.Tensor], tuple[torch.Tensor, float]]  # batch indices -> (loss, what the epoch tracks)


def fit_epochs(
    model: nn.Module,
    n: int,
    step: Step,
    optimizer: torch.optim.Optimizer,
    *,
    generator: torch.Generator,
    epochs: int,
    batch_size: int,
    one_cycle: bool,
    name: str,
    bar: str = "",
    progress: bool = True,
    hint: str,
    before_epoch: Callable[[int], None] | None = None,
    after_epoch: Callable[[int, float, float], None] | None = None,
) -> None:
    """The one training loop: ``epochs`` passes over a fresh shuffle of ``n`` items in full batches of ``batch_size``
    (the last partial batch dropped), the model in train mode, every batch one optimizer step.

    ``step(indices)`` computes a batch's loss (and what the epoch sums beside it: correct predictions, an entropy);
    a non-finite loss stops with ``FloatingPointError`` naming ``name``, the epoch, the step and the learning rate,
    then ``hint``. With ``one_cycle`` the learning rate follows torch's ``OneCycleLR`` (its defaults) peaking at
    the optimizer's, stepped after each optimizer step. The shuffles, and whatever ``step`` draws,
    come from ``generator`` in this order, so one seed gives one result. ``before_epoch(epoch)`` runs before the
    model is put in train mode; ``after_epoch(epoch, mean loss, tracked sum)`` after the epoch's last batch. The
    tqdm bar (``progress``) reads ``"<bar>epoch e/E"``; :class:`BatchProgress` logs ``name`` either way.
    """
    steps = n // batch_size
    peak = optimizer.param_groups[0]["lr"]
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, peak, total_steps=epochs * steps) if one_cycle else None
    report = BatchProgress(name, epochs, steps)
    for epoch in range(1, epochs + 1):
        if before_epoch is not None:
            before_epoch(epoch)
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum, tracked = 0.0, 0.0
        progress_bar = tqdm(range(steps), desc=f"{bar}epoch {epoch}/{epochs}", disable=not progress)
        for index in progress_bar:
            loss, seen = step(order[index * batch_size : (index + 1) * batch_size])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{name} loss became {loss.item()} at epoch {epoch}/{epochs}, step {index + 1}/{steps} "
                    f"(learning rate {optimizer.param_groups[0]['lr']:.3g}); {hint}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            loss_sum += loss.item()
            tracked += seen
            progress_bar.set_postfix(loss=f"{loss_sum / (index + 1):.4f}", refresh=False)
            report(epoch, index + 1, loss_sum / (index + 1))
        if after_epoch is not None:
            after_epoch(epoch, loss_sum / steps, tracked)


def _fit(
    model,
    images,
    labels,
    val_images,
    val_labels,
    *,
    epochs,
    batch_size,
    lr,
    seed,
    augment,
    label_smoothing,
    weight_decay,
    precision,
    low_res,
    progress,
    on_epoch_end,
) -> History:
    generator = torch.Generator().manual_seed(seed)
    optimizer = _optimizer(model, lr, weight_decay)
    history: History = {"epoch": [], "loss": [], "train_acc": [], "val_acc": []}
    crop = None

    def before_epoch(epoch: int) -> None:
        nonlocal crop
        crop = low_res[0] if epoch <= low_res[1] else None

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        batch = augment_batch(images[idx], generator, crop) if augment else images[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(torch.from_numpy(preprocess(batch.numpy())))
        loss = F.cross_entropy(logits.float(), labels[idx], label_smoothing=label_smoothing)
        return loss, int((logits.argmax(1) == labels[idx]).sum())

    def after_epoch(epoch: int, loss: float, correct: float) -> None:
        history["epoch"].append(epoch)
        history["loss"].append(loss)
        history["train_acc"].append(correct / ((len(images) // batch_size) * batch_size))
        history["val_acc"].append(accuracy(val_labels, predict_logits(model, val_images).argmax(1)))
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)

    model.to(memory_format=torch.channels_last)
    try:
        fit_epochs(
            model,
            len(images),
            step,
            optimizer,
            epochs=epochs,
            batch_size=batch_size,
            generator=generator,
            one_cycle=True,
            name="training",
            progress=progress,
            hint="lower lr, or check the model's weights and inputs",
            before_epoch=before_epoch,
            after_epoch=after_epoch,
        )
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.eval()
    return history


def learning_curves_figure(history: History):
    """Two panels: training loss per epoch; train and validation accuracy per epoch."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(history["epoch"], history["loss"], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
    ax_acc.plot(history["epoch"], history["train_acc"], marker="o", label="train (augmented)")
    ax_acc.plot(history["epoch"], history["val_acc"], marker="o", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write ``model.state_dict()`` atomically (deterministic bytes for identical weights)."""
    return atomic.save_torch(model.state_dict(), path)


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state-dict checkpoint into ``model`` (``weights_only=True``); mismatching keys are named."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; write one with save_checkpoint(model, path)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"checkpoint {path} is for another architecture than {type(model).__name__}: "
            f"missing keys {missing[:8]}, unexpected keys {unexpected[:8]}, shape mismatches "
            f"(checkpoint vs model) {wrong_shape[:8]}; build the model the checkpoint was saved from"
        )
    model.load_state_dict(state)
    return model
