"""The benchmark's data: MNIST scaled to [0, 1] as float32, handed to each run as ``.npy`` files.

The parent process reads the IDX files once and writes ``X_train.npy``, ``y_train.npy``,
``X_test.npy`` and ``y_test.npy`` into a scratch folder; every measured run (a fresh process)
loads them with :func:`load_arrays`, so no run pays for decompression and all see the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.data.idx import read_images, read_labels
from pipeline.names import MNIST_FILES as _FILES
from pipeline.names import RAW_DIR

#: The benchmark's arrays and the MNIST file each comes from.
MNIST_FILES = {
    "X_train": _FILES["train_images"],
    "y_train": _FILES["train_labels"],
    "X_test": _FILES["test_images"],
    "y_test": _FILES["test_labels"],
}
ARRAYS = tuple(MNIST_FILES)


def find_mnist() -> Path:
    """The folder with the four MNIST ``.gz`` files: ``$MNIST_MIRROR``, else ``data/raw``."""
    candidates = [RAW_DIR]
    if os.environ.get("MNIST_MIRROR"):
        candidates.insert(0, Path(os.environ["MNIST_MIRROR"]))
    for folder in candidates:
        if all((folder / name).exists() for name in MNIST_FILES.values()):
            return folder
    raise SystemExit(
        "MNIST not found: run `dvc repro download` or set MNIST_MIRROR to a folder with the "
        "four .gz files (or pass --synthetic for a smoke run on random images)"
    )


def load_mnist(folder: Path) -> dict[str, np.ndarray]:
    """Images ``(n, 784)`` float32 in [0, 1] (one array each, no float64 temporary) and labels
    ``(n,)`` int64."""
    data = {}
    for key, name in MNIST_FILES.items():
        if key.startswith("X"):
            images = read_images(folder / name)
            data[key] = np.divide(
                images.reshape(images.shape[0], -1), np.float32(255), dtype=np.float32
            )
        else:
            data[key] = read_labels(folder / name).astype(np.int64)
    return data


def synthetic(n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Random MNIST-shaped data a network can learn: faint noise plus one bright pixel per class."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 10, n)
        X = rng.random((n, 784), dtype=np.float32) * np.float32(0.2)
        X[np.arange(n), y * 70] += np.float32(0.8)
        data[f"X_{split}"], data[f"y_{split}"] = X, y.astype(np.int64)
    return data


def subset(data: dict[str, np.ndarray], n_train: int | None, n_test: int | None) -> dict:
    """The first ``n_train`` training and ``n_test`` test examples (``None``: all)."""
    return {
        "X_train": data["X_train"][:n_train],
        "y_train": data["y_train"][:n_train],
        "X_test": data["X_test"][:n_test],
        "y_test": data["y_test"][:n_test],
    }


def save_arrays(data: dict[str, np.ndarray], folder: Path) -> Path:
    """Write the four arrays as ``<key>.npy`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in ARRAYS:
        np.save(folder / f"{key}.npy", np.ascontiguousarray(data[key]))
    return folder


def load_arrays(folder: Path) -> dict[str, np.ndarray]:
    """The four arrays written by :func:`save_arrays`."""
    return {key: np.load(Path(folder) / f"{key}.npy", allow_pickle=False) for key in ARRAYS}
