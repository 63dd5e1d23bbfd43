"""The preprocessed split, as every training run loads it."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.mnist import split_digest
from pipeline.errors import UsageError
from pipeline.files import require
from pipeline.names import PROCESSED, SUMMARY


class SplitMismatch(UsageError):
    """The config asks for another split than the one in ``data/processed``."""


@dataclass
class Dataset:
    """The preprocessed split: float32 images ``(n, 784)`` in [0, 1] and int labels ``(n,)``;
    ``digests``: the SHA-256 of each source file it was made from; ``split_digest``: the SHA-256
    of the processed arrays as stored (:func:`pipeline.data.mnist.split_digest`, before
    ``data.train_limit``); ``split``: what its summary says made it (``split_seed``,
    ``validation_size``; empty when it does not say)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    digests: dict[str, str] = field(default_factory=dict)
    split_digest: str | None = None
    split: dict[str, int] = field(default_factory=dict)

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
    digest = split_digest(arrays)
    if train_limit is not None:
        arrays["X_train"] = arrays["X_train"][:train_limit]
        arrays["y_train"] = arrays["y_train"][:train_limit]
    for key in ("y_train", "y_val", "y_test"):
        arrays[key] = arrays[key].astype(np.intp, copy=False)
    summary = path.with_name(SUMMARY.name)
    return Dataset(
        **arrays, digests=data_digests(summary), split_digest=digest, split=split_made(summary)
    )


def processed_digest(path: str | Path = PROCESSED) -> str | None:
    """:func:`~pipeline.data.mnist.split_digest` of the processed split at ``path``, recomputed
    from its arrays (``None`` when there is no readable file)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return split_digest({key: data[key] for key in data.files})
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


#: The settings of the preprocess stage that make the split, as its summary records them.
SPLIT_KEYS = ("split_seed", "validation_size")


def split_made(summary: str | Path = SUMMARY) -> dict[str, int]:
    """``split_seed`` and ``validation_size`` as the preprocess stage's summary records them
    (those it records; none if absent or unreadable)."""
    try:
        recorded = json.loads(Path(summary).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {k: recorded[k] for k in SPLIT_KEYS if isinstance(recorded.get(k), int)}


def check_split(cfg_data, split: dict[str, int], where: str | Path = PROCESSED) -> None:
    """Refuse a config whose ``data.split_seed`` or ``data.validation_size`` is not what made the
    processed split: a run must not record one split and train on another."""
    for key, made in split.items():
        wanted = getattr(cfg_data, key)
        if wanted != made:
            raise SplitMismatch(
                f"{where} was split with data.{key}={made}, but the config says "
                f"data.{key}={wanted}: run `dvc repro preprocess` with it first (the split "
                "belongs to the preprocess stage; a sweep cannot vary it)"
            )


def data_digests(summary: str | Path = SUMMARY) -> dict[str, str]:
    """The SHA-256 of each source file, from the preprocess stage's summary (none if absent or
    unreadable)."""
    summary = Path(summary)
    try:
        return dict(json.loads(summary.read_text()).get("sha256", {}))
    except (OSError, ValueError, AttributeError):
        return {}
