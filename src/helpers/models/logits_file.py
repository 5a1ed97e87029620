"""The logits files phases hand each other: ``{model: {split: float32 (N, classes)}}`` in one npz.

A model's logits for a split are stored under the key ``<model>_<split>``; this module is the only
place that builds or parses that key (phase 02's single-model ``logits.npz`` holds bare split keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from helpers.run import atomic

SPLITS = ("val", "test")


def key(model: str, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return f"{model}_{split}"


def save(path: Path, logits: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Write ``{model: {split: logits}}`` atomically (deterministic bytes)."""
    atomic.save_npz(
        path,
        **{
            key(model, split): np.asarray(x, np.float32)
            for model, by_split in logits.items()
            for split, x in by_split.items()
        },
    )


def load_splits(path: Path) -> dict[str, np.ndarray]:
    """``{split: logits}`` of a single-model file (phase 02's ``logits.npz``: bare split keys); the file is closed."""
    with np.load(path) as npz:
        unknown = [name for name in npz.files if name not in SPLITS]
        if unknown:
            raise ValueError(f"{path}: keys {unknown} are not splits {SPLITS}; a multi-model file reads with load()")
        return {name: npz[name] for name in npz.files}


def load(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{model: {split: logits}}`` from a file written by ``save``, in the file's key order."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as npz:
        for name in npz.files:
            model, _, split = name.rpartition("_")
            if not model or split not in SPLITS:
                raise ValueError(f"{path}: key {name!r} is not <model>_<split> with split in {SPLITS}")
            out.setdefault(model, {})[split] = npz[name]
    return out
