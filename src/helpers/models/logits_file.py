"""The logits files phases hand each other, and the one grammar of their keys.

A logits file is one npz holding a nested dict of arrays. Its key grammar: the names of one array's
levels, outermost first, joined by the file's separator (a :class:`Layout`). This module is the only
place that builds or parses such a key; each file kind has its layout and its reader/writer here:

================================  ===========================================  ========================
file (phase)                      key                                          read / write
================================  ===========================================  ========================
``logits.npz`` (02, 02b)          ``<split>``                                  :func:`load_splits`
``int8_logits.npz`` (04),         ``<model>_<split>``                          :func:`load` / :func:`save`
``calibrated_logits.npz`` (06)
``runtime_logits.npz`` (04)       ``<runtime>__<model>__<split>``              :func:`load_runtimes` /
                                                                               :func:`save_runtimes`
``shift_logits.npz`` (02b)        ``<domain>.<split>.<before|after|labels>``   :func:`load_shift` /
                                                                               :func:`save_shift`
================================  ===========================================  ========================

The separators differ because the files' bytes are part of the runs' records; a split is always one of
:data:`SPLITS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers.run import atomic

SPLITS = ("val", "test")
SHIFT_ARRAYS = ("before", "after", "labels")  # a domain split of shift_logits.npz: logits before/after, labels
VOCABULARY = {"split": SPLITS, "array": SHIFT_ARRAYS}  # the levels whose names are fixed


@dataclass(frozen=True)
class Layout:
    """One logits file kind: the levels of its nested dict (outermost first) and the separator of its keys."""

    levels: tuple[str, ...]
    sep: str
    file: str  # the files that use it, for messages
    dtype: type | None = None  # arrays are stored as this dtype (None: as given)

    def grammar(self) -> str:
        return self.sep.join(f"<{level}>" for level in self.levels)

    def key(self, *names: str) -> str:
        """The key of the array at ``names`` (one per level); a name the parser could not split back is refused."""
        if len(names) != len(self.levels):
            raise ValueError(f"the keys of {self.file} are {self.grammar()}: need one name per level, got {names}")
        for i, (level, name) in enumerate(zip(self.levels, names)):
            if level in VOCABULARY and name not in VOCABULARY[level]:
                raise ValueError(f"{level} must be one of {VOCABULARY[level]}, got {name!r}")
            if i and self.sep in name:  # the outermost name may hold the separator: keys split from the right
                raise ValueError(f"{level} {name!r} holds {self.sep!r}, the separator of the keys of {self.file}")
        return self.sep.join(names)

    def parse(self, key: str, path: Path | str = "") -> tuple[str, ...]:
        """The names in ``key``; a key not in this grammar is a ValueError naming ``path``."""
        names = tuple(key.rsplit(self.sep, len(self.levels) - 1)) if self.sep else (key,)
        if (
            len(names) != len(self.levels)
            or not all(names)
            or any(level in VOCABULARY and name not in VOCABULARY[level] for level, name in zip(self.levels, names))
        ):
            fixed = "; ".join(f"{level} in {VOCABULARY[level]}" for level in self.levels if level in VOCABULARY)
            raise ValueError(f"{path}: key {key!r} is not {self.grammar()} ({fixed}), the keys of {self.file}")
        return names

    def flatten(self, nested: Mapping) -> dict[str, np.ndarray]:
        """``{key: array}`` of a nested dict with one level per :attr:`levels`."""
        out = {}

        def walk(node: Any, names: tuple[str, ...]) -> None:
            if len(names) == len(self.levels):
                out[self.key(*names)] = np.asarray(node, self.dtype)
            else:
                for name, child in node.items():
                    walk(child, (*names, name))

        walk(nested, ())
        return out

    def save(self, path: Path, nested: Mapping) -> None:
        """Write the nested dict atomically (deterministic bytes)."""
        atomic.save_npz(path, **self.flatten(nested))

    def load(self, path: Path) -> dict:
        """The nested dict of a file in this layout, in the file's key order; the file is closed."""
        out: dict = {}
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                *outer, last = self.parse(name, path)
                node = out
                for level in outer:
                    node = node.setdefault(level, {})
                node[last] = npz[name]
        return out


BY_SPLIT = Layout(("split",), "", "a single-model file (phase 02's logits.npz)")
BY_MODEL = Layout(("model", "split"), "_", "a multi-model file (int8_logits.npz, calibrated_logits.npz)", np.float32)
BY_RUNTIME = Layout(("runtime", "model", "split"), "__", "phase 04's runtime_logits.npz")
BY_DOMAIN = Layout(("domain", "split", "array"), ".", "phase 02b's shift_logits.npz")

SHIFT_FILE = "shift_logits.npz"


def key(model: str, split: str) -> str:
    """``<model>_<split>``: a key of a multi-model file."""
    return BY_MODEL.key(model, split)


def save(path: Path, logits: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Write ``{model: {split: logits}}`` atomically as float32 (deterministic bytes)."""
    BY_MODEL.save(path, logits)


def load(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{model: {split: logits}}`` from a file written by ``save``, in the file's key order."""
    return BY_MODEL.load(path)


def load_splits(path: Path) -> dict[str, np.ndarray]:
    """``{split: logits}`` of a single-model file (phase 02's ``logits.npz``: bare split keys); the file is closed."""
    return BY_SPLIT.load(path)


def runtime_key(runtime: str, model: str, split: str) -> str:
    """``<runtime>__<model>__<split>``: the key of one runtime's logits of one model in ``runtime_logits.npz``."""
    return BY_RUNTIME.key(runtime, model, split)


def save_runtimes(path: Path, logits: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> None:
    """Write ``{runtime: {model: {split: logits}}}`` atomically (deterministic bytes)."""
    BY_RUNTIME.save(path, logits)


def load_runtimes(path: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{runtime: {model: {split: logits}}}`` from phase 04's ``runtime_logits.npz``."""
    return BY_RUNTIME.load(path)


def save_shift(path: Path, logits: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> None:
    """Write ``{domain: {split: {"before", "after", "labels"}}}`` atomically (deterministic bytes)."""
    BY_DOMAIN.save(path, logits)


def load_shift(path: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{domain: {split: {"before", "after", "labels"}}}`` from phase 02b's ``shift_logits.npz``."""
    return BY_DOMAIN.load(path)
