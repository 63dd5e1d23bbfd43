"""The preprocessed split, as every training run loads it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.files import require
from pipeline.names import PROCESSED, SUMMARY


@dataclass
class Dataset:
    """The preprocessed split: float32 images ``(n, 784)`` in [0, 1] and int labels ``(n,)``;
    ``digests``: the SHA-256 of each source file it was made from."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(X_val, y_val)``, or ``None`` when the split holds no validation images."""
        return (self.X_val, self.y_val) if len(self.y_val) else None


def load_dataset(path: str | Path = PROCESSED, train_limit: int | None = None) -> Dataset:
    """Load the preprocess stage's ``.npz`` (and the digests of its ``summary.json`` beside it);
    keep only the first ``train_limit`` training images."""
    path = require(path, "preprocess")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if train_limit is not None:
        arrays["X_train"] = arrays["X_train"][:train_limit]
        arrays["y_train"] = arrays["y_train"][:train_limit]
    for key in ("y_train", "y_val", "y_test"):
        arrays[key] = arrays[key].astype(np.intp, copy=False)
    return Dataset(**arrays, digests=data_digests(path.with_name(SUMMARY.name)))


def data_digests(summary: str | Path = SUMMARY) -> dict[str, str]:
    """The SHA-256 of each source file, from the preprocess stage's summary (none if absent or
    unreadable)."""
    summary = Path(summary)
    try:
        return dict(json.loads(summary.read_text()).get("sha256", {}))
    except (OSError, ValueError, AttributeError):
        return {}
