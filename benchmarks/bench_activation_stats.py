"""Overhead of the activation-statistics hooks: hooked passes vs plain forward passes, side by side.

    TQDM_DISABLE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_activation_stats.py \
        [--reps 7] [--threads 1] [--skip-transformer]

For resnet8 on a 1000-image slice (the real CIFAR-10 stratified slice when
.cache/cifar-10-batches-py exists, else seeded random uint8 images) and for all-MiniLM-L6-v2 on
256 sentences (when the .[transformer] extra is installed). Each repetition times one plain
forward pass over the slice (same batches, same forward function, inference mode) and one full
statistics call (two hooked passes -- moments, then z-score spikes -- plus the state_dict
hashes), interleaved so that load on a shared CPU hits both alike. Medians of wall time and of
this process's CPU time are reported (CPU time is what survives other processes' load on a
shared machine). ``per pass`` = stats time / (2 x plain time) of each repetition's pair, median
over repetitions (pairs share the machine's load of the moment); the target is <= 1.3x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import figures  # sibling: docs/FIGURES.md, regenerated from this run's output
import numpy as np
import torch

from helpers.activations.stats import default_layers, image_activation_stats, init_model
from helpers.data.datasets import load_dataset, preprocess, stratified_slice

ROOT = Path(__file__).resolve().parents[1]
CIFAR_DIR = ROOT / ".cache" / "cifar-10-batches-py"
TARGET = 1.3


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(name: str, plain: Callable[[], object], stats: Callable[[], object], reps: int) -> None:
    plain(), stats()  # warm-up: allocator, kernels, lazy imports
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "stats": []}
    for rep in range(reps):
        for kind, fn in (("plain", plain), ("stats", stats)):
            runs[kind].append(timed(fn))
        (pw, pc), (sw, sc) = runs["plain"][-1], runs["stats"][-1]
        print(
            f"  {name} rep {rep + 1}/{reps}: plain {pw:.3f} s wall / {pc:.3f} s CPU, "
            f"stats {sw:.3f} s wall / {sc:.3f} s CPU",
            flush=True,
        )
    for clock, i in (("wall", 0), ("CPU", 1)):
        p = statistics.median(r[i] for r in runs["plain"])
        s = statistics.median(r[i] for r in runs["stats"])
        paired = statistics.median(st[i] / (2 * pl[i]) for pl, st in zip(runs["plain"], runs["stats"]))
        verdict = "ok" if paired <= TARGET else "over target"
        print(
            f"{name} [{clock}, median of {reps}]: plain pass {p:.3f} s | stats (2 hooked passes) {s:.3f} s | "
            f"per pass {paired:.2f}x (target <= {TARGET}x, {verdict}) | whole call {s / p:.2f}x one plain pass"
        )


def cifar_slice() -> tuple[np.ndarray, np.ndarray, str]:
    if CIFAR_DIR.is_dir():
        ds = load_dataset("cifar10", CIFAR_DIR)
        return ds.train_images, stratified_slice(ds.train_labels, 100, seed=0), "CIFAR-10 stratified slice"
    images = np.random.default_rng(0).integers(0, 256, size=(1000, 32, 32, 3), dtype=np.uint8)
    return images, np.arange(1000), "seeded random uint8 images (no .cache/cifar-10-batches-py)"


def bench_resnet8(reps: int, batch_size: int) -> None:
    images, indices, source = cifar_slice()
    model = init_model("resnet8", 10, seed=0)
    layers = default_layers(model)
    print(
        f"resnet8: {len(indices)} images ({source}), batch {batch_size}, {len(layers)} hooked layers (default_layers)"
    )

    @torch.inference_mode()
    def plain():
        for s in range(0, len(indices), batch_size):
            model(torch.from_numpy(preprocess(images[indices[s : s + batch_size]])))

    compare(
        "resnet8",
        plain,
        lambda: image_activation_stats(model, layers, images, indices, role="init", batch_size=batch_size),
        reps,
    )


def bench_minilm(reps: int, sentences: int, batch_size: int) -> None:
    try:
        from helpers.activations.transformer import load_minilm, token_batches, transformer_activation_stats

        model, tokenizer = load_minilm("trained")
    except ImportError as exc:
        print(f"MiniLM skipped: {exc}")
        return
    from helpers.data.text_slice import text_slice

    text = text_slice(sentences, seed=0)
    batches = token_batches(tokenizer, text.sentences, batch_size, max_length=128)
    print(
        f"MiniLM: {sentences} sentences (pydoc_data.topics), batch {batch_size}, 6 hooked MLP layers, "
        f"{int(sum(b.valid.sum() for b in batches))} real tokens"
    )

    @torch.inference_mode()
    def plain():
        for b in batches:
            model(**b.inputs)

    compare(
        "MiniLM",
        plain,
        lambda: transformer_activation_stats(model, tokenizer, text, role="trained", batch_size=batch_size),
        reps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--image-batch", type=int, default=250)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--text-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--skip-transformer", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    bench_resnet8(args.reps, args.image_batch)
    if not args.skip_transformer:
        bench_minilm(args.reps, args.sentences, args.text_batch)


if __name__ == "__main__":
    figures.run(main)
