"""CPU training throughput of ResNet-8 (CIFAR-10 shapes): where a training step's time goes, and which
settings raise images/s, measured side by side.

One step is what ``helpers.models.training`` runs: flip + pad-crop augmentation of a uint8 NHWC batch,
``preprocess``, forward (optionally under bf16 autocast), label-smoothed cross-entropy, backward, SGD
(Nesterov) and the one-cycle schedule. Each configuration trains its own fresh model on the same
seeded random batches; rounds alternate the configurations (paired A/B: a noisy shared machine slows
all of them alike) and the median images/s per configuration is printed with its ratio to the
project's default (bf16 autocast, channels-last, eager, batch 256). ``torch.compile`` variants compile
the model (inductor), timed after their warm-up; where inductor cannot build here they are reported
as such.

    python benchmarks/bench_train_step.py                 # about 5 minutes on 2 cores
    python benchmarks/bench_train_step.py --steps 10 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import figures  # noqa: E402  (sibling: docs/FIGURES.md, regenerated from this run's output)

from helpers.data.datasets import preprocess  # noqa: E402
from helpers.models.architectures import build_model  # noqa: E402
from helpers.models.training import _optimizer, augment_batch  # noqa: E402

# name -> (precision, channels_last, compiled, batch size, crop size or None for the full 32x32);
# the first is the project's default recipe at full size
CONFIGS = {
    "bf16 channels-last (default)": ("bf16", True, False, 256, None),
    "bf16 channels-last 24x24 crops": ("bf16", True, False, 256, 24),
    "fp32 channels-last": ("fp32", True, False, 256, None),
    "fp32 contiguous": ("fp32", False, False, 256, None),
    "bf16 channels-last b512": ("bf16", True, False, 512, None),
    "fp32 channels-last compiled": ("fp32", True, True, 256, None),
    "bf16 channels-last compiled": ("bf16", True, True, 256, None),
}
STAGES = ("augment+preprocess", "forward", "backward", "optimizer")


class Trainer:
    """One configuration's model, optimizer and step function."""

    def __init__(self, precision: str, channels_last: bool, compiled: bool, batch_size: int, crop: int | None):
        torch.manual_seed(0)
        self.precision, self.batch_size, self.crop = precision, batch_size, crop
        self.model = build_model("resnet8", 10).train()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = _optimizer(self.model, 0.3, 5e-4)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=0.3, total_steps=10_000)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.generator = torch.Generator().manual_seed(0)

    def step(self, images: torch.Tensor, labels: torch.Tensor, times: dict[str, float] | None = None) -> None:
        marks = [time.perf_counter()]
        batch = torch.from_numpy(preprocess(augment_batch(images, self.generator, self.crop).numpy()))
        marks.append(time.perf_counter())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.forward(batch)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.1)
        marks.append(time.perf_counter())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        self.optimizer.step()
        self.schedule.step()
        marks.append(time.perf_counter())
        if times is not None:
            for stage, start, end in zip(STAGES, marks, marks[1:]):
                times[stage] = times.get(stage, 0.0) + end - start


def batches(batch_size: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    return [
        (
            torch.from_numpy(rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)),
            torch.from_numpy(rng.integers(0, 10, batch_size).astype(np.int64)),
        )
        for _ in range(steps)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} "
        f"thread(s), load average {os.getloadavg()[0]:.1f}; {args.steps} steps x {args.rounds} rounds per config"
    )
    trainers, failed = {}, {}
    for name, config in CONFIGS.items():
        trainer = Trainer(*config)
        batch_size = trainer.batch_size
        warm = batches(batch_size, 3)
        start = time.perf_counter()
        try:
            for images, labels in warm:
                trainer.step(images, labels)
        except Exception as exc:  # inductor needs a working C++ toolchain; say why and go on
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            continue
        print(f"  warm-up {name}: {time.perf_counter() - start:.1f} s")
        trainers[name] = (trainer, batches(batch_size, args.steps))
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    stages: dict[str, dict[str, float]] = {name: {} for name in trainers}
    for _ in range(args.rounds):
        for name, (trainer, data) in trainers.items():
            start = time.perf_counter()
            for images, labels in data:
                trainer.step(images, labels, stages[name])
            rates[name].append(len(data) * trainer.batch_size / (time.perf_counter() - start))
    default = statistics.median(rates[next(iter(CONFIGS))])
    print(f"\n{'configuration':<32} {'images/s':>9} {'vs default':>10}   " + "  ".join(f"{s:>18}" for s in STAGES))
    for name, values in rates.items():
        total = sum(stages[name].values())
        shares = "  ".join(f"{100 * stages[name][s] / total:>17.0f}%" for s in STAGES)
        print(f"{name:<32} {statistics.median(values):>9.0f} {statistics.median(values) / default:>9.2f}x   {shares}")
    for name, why in failed.items():
        print(f"{name:<32} not measured: {why}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    figures.run(main)
