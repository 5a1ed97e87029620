"""Merge and load-back validation of an adapted model, its before/after evaluation, record, table and figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from helpers.adaptation.methods import AdaptConfig, Adapted, MergeParityError, load_adapter
from helpers.metrics.calibration import ece_bootstrap_ci, expected_calibration_error
from helpers.metrics.classification import accuracy_with_ci, per_class_accuracy
from helpers.models import logits_file, parity
from helpers.models.architectures import predict_logits


def merge_parity(adapter_model: nn.Module, merged: nn.Module, images: np.ndarray) -> dict:
    """Compare the merged checkpoint (loaded into a fresh model) with the adapter model on ``images``.

    Raises :class:`MergeParityError` (message starting ``FAIL``, with the numbers) when the largest
    logit difference exceeds the project's one parity tolerance (``helpers.models.parity``) or any argmax
    differs (a near tie included: the merged model must predict what the adapter model predicts).
    """
    return _parity(predict_logits(adapter_model, images), predict_logits(merged, images), "merged checkpoint")


def adapter_parity(
    base: nn.Module, config: AdaptConfig, adapter: bytes, adapter_model: nn.Module, images: np.ndarray
) -> dict | None:
    """LoRA: the saved adapter weights, loaded into a fresh PEFT model on ``base``, reproduce the adapter model
    (None for the other modes: their adapter is the merged model's own tensors)."""
    if config.mode != "lora":
        return None
    reloaded = load_adapter(base, config, adapter)
    return _parity(predict_logits(adapter_model, images), predict_logits(reloaded, images), "reloaded adapter")


def _parity(expected: np.ndarray, actual: np.ndarray, what: str) -> dict:
    check = parity.compare_logits(expected, actual)
    result = {
        "n": len(expected),
        "max_abs_logit_diff": check.max_abs_diff,
        "tolerance": check.max_allowed,
        "argmax_differ": check.argmax_mismatches,
        "parity": check.describe(),
        "status": "PASS" if check.passed and not check.argmax_mismatches else "FAIL",
    }
    if result["status"] == "FAIL":
        raise MergeParityError(
            f"FAIL: the {what} does not reproduce the adapter model on {len(expected)} target test images: "
            f"{check.message()}; no model is handed on"
        )
    return result


def evaluation_logits(
    before: nn.Module, after: nn.Module, sets: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{domain: {split: {"before", "after", "labels"}}}`` for ``domain.evaluation_sets`` (one pass per model and set)."""
    return {
        name: {
            split: {"before": predict_logits(before, images), "after": predict_logits(after, images), "labels": labels}
            for split, (images, labels) in by_split.items()
        }
        for name, by_split in sets.items()
    }


def before_after(logits: dict[str, dict[str, dict[str, np.ndarray]]], num_classes: int) -> dict:
    """Per domain of ``evaluation_logits``, on its TEST split, before and after: accuracy with its 95% Wilson CI,
    per-class accuracy, and the ECE (15 bins) with its 95% percentile-bootstrap CI (1000 resamples, seed 0)."""
    out = {}
    for name, by_split in logits.items():
        test = by_split["test"]
        out[name] = {}
        for when in ("before", "after"):
            preds = test[when].argmax(1)
            low, high = ece_bootstrap_ci(test[when], test["labels"], n_boot=1000, seed=0)
            out[name][when] = {
                **accuracy_with_ci(test["labels"], preds),
                "per_class": per_class_accuracy(test["labels"], preds, num_classes).tolist(),
                "ece": expected_calibration_error(test[when], test["labels"]),
                "ece_ci": [low, high],
            }
    return out


# ``evaluation_logits`` as one npz, what phase 06 measures calibration under shift on (its file kind and key
# grammar are helpers.models.logits_file's; the phases' notebooks use these names)
SHIFT_FILE = logits_file.SHIFT_FILE
save_shift_logits = logits_file.save_shift
load_shift_logits = logits_file.load_shift


def trainable_record(adapted: Adapted) -> dict:
    return {
        "count": adapted.trainable,
        "total": adapted.total,
        "percent": 100.0 * adapted.trainable / adapted.total if adapted.total else 0.0,
    }


def record(
    config: AdaptConfig,
    adapted: Adapted,
    targets: list[str],
    parity: dict,
    adapter_check: dict | None,
    results: dict,
    domain: dict,
) -> dict:
    """The content of ``adaptation.json``."""
    return {
        "adaptation": config.mode,
        "label_free": config.label_free,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
        "lora_targets": targets,
        "trainable_parameters": trainable_record(adapted),
        "merge_parity": parity,
        "adapter_load_back": adapter_check,
        "accuracy": results,
        "history": adapted.history,
        "collapse_guard": adapted.collapse_guard or None,  # label-free fits: methods.CollapseGuard.record()
        "target_domain": domain,
        "passed_through": not config.fits,
        "status": parity["status"],
    }


def results_table(doc: dict) -> pd.DataFrame:
    """The 2x2 table: one row per test set (source, target), accuracy and ECE before and after adaptation,
    each with its 95% CI, and the accuracy gain."""
    rows = {}
    for name, r in doc["accuracy"].items():
        row = {"n": r["before"]["n"]}
        for when in ("before", "after"):
            row[f"accuracy {when}"] = r[when]["accuracy"]
            row[f"accuracy {when} 95% CI"] = f"[{r[when]['ci_low']:.4f}, {r[when]['ci_high']:.4f}]"
        row["gain"] = r["after"]["accuracy"] - r["before"]["accuracy"]
        for when in ("before", "after"):
            if "ece" in r[when]:  # runs recorded before the ECE was added have accuracy only
                row[f"ECE {when}"] = r[when]["ece"]
                row[f"ECE {when} 95% CI"] = "[{:.4f}, {:.4f}]".format(*r[when]["ece_ci"])
        rows[f"{name} test"] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.attrs["trainable"] = doc["trainable_parameters"]
    return frame


def per_class_figure(doc: dict, class_names: list[str]):
    """Per-class accuracy before and after adaptation, one panel per test set; the learning curve if any."""
    import matplotlib.pyplot as plt

    sets = list(doc["accuracy"])
    history = {k: v for k, v in doc["history"].items() if k != "epoch"}
    panels = len(sets) + (1 if history else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.4), squeeze=False)
    x = np.arange(len(class_names))
    for ax, name in zip(axes[0], sets):
        for offset, when in ((-0.2, "before"), (0.2, "after")):
            r = doc["accuracy"][name][when]
            ax.bar(x + offset, r["per_class"], 0.4, label=f"{when} ({r['accuracy']:.3f})")
        ax.set(xticks=x, ylim=(0, 1.05), ylabel="accuracy", title=f"{name} test, per class ({doc['adaptation']})")
        ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=7)
        ax.legend(fontsize=7, loc="lower right")
    if history:
        ax = axes[0][-1]
        for key, values in history.items():
            ax.plot(doc["history"]["epoch"], values, marker="o", label=key)
        ax.set(xlabel="epoch", title="learning curve (target train images)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
