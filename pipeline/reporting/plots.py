"""Figures a person would rather look at than read: learning curves and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipeline.files import atomic_write


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_write(path) as fh:
        fig.savefig(fh, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def learning_curves(rows: Sequence[dict[str, float]], path: Path, title: str = "") -> Path:
    """Loss and top-1 accuracy per epoch, training against validation, side by side."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label, style in (
        ("train", "training (mean over the epoch)", "-o"),
        ("val", "validation (end of epoch)", "--s"),
    ):
        if f"{key}_loss" in rows[0]:
            ax_loss.plot(epochs, [r[f"{key}_loss"] for r in rows], style, label=label)
            ax_acc.plot(epochs, [r[f"{key}_accuracy"] for r in rows], style, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_matrix(cm: np.ndarray, path: Path, title: str = "Confusion matrix") -> Path:
    """Counts in every cell, coloured by the share of the true class (rows sum to 1)."""
    cm = np.asarray(cm)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = cm.shape[0]
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xlabel="predicted digit",
        ylabel="true digit",
        title=title,
    )
    fig.colorbar(image, ax=ax, label="share of the true digit")
    fig.tight_layout()
    return save_figure(fig, path)
