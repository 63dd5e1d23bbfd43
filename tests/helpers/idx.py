"""Tiny fake MNIST files for tests: IDX content, gzip-compressed, with the real file names.

Every fake image encodes its own index in its first two pixels (``index % 256``, ``index //
256``), so a test can tell which source image ended up in which row after a split.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from pipeline.data.idx import write_idx
from pipeline.names import MNIST_FILES


def fake_images(n: int, seed: int = 0, rows: int = 28, cols: int = 28) -> np.ndarray:
    """``uint8 (n, rows, cols)``, random pixels except the index in the first two."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0] = np.arange(n) % 256
    flat[:, 1] = np.arange(n) // 256
    return images


def image_indices(X: np.ndarray) -> np.ndarray:
    """Recover the source indices from float features (pixel / 255) or uint8 images."""
    flat = np.asarray(X).reshape(len(X), -1)
    if flat.dtype != np.uint8:
        flat = np.rint(flat * 255).astype(np.int64)
    return flat[:, 0].astype(np.int64) + 256 * flat[:, 1].astype(np.int64)


def fake_labels(n: int, seed: int = 0, n_classes: int = 10) -> np.ndarray:
    """``uint8 (n,)``: unbalanced classes (class c about twice as likely as class 0 when c=9),
    every class present when ``n >= n_classes``."""
    rng = np.random.default_rng(seed + 1)
    weights = np.linspace(1.0, 2.0, n_classes)
    labels = rng.choice(n_classes, size=n, p=weights / weights.sum()).astype(np.uint8)
    labels[: min(n, n_classes)] = np.arange(min(n, n_classes), dtype=np.uint8)
    return labels


def decompressed_sha256(path: str | Path) -> str:
    return hashlib.sha256(gzip.decompress(Path(path).read_bytes())).hexdigest()


def write_fake_mnist(
    directory: str | Path, n_train: int = 50, n_test: int = 20, seed: int = 0
) -> dict[str, dict[str, str]]:
    """Write the four fake files into ``directory``; return the config-shaped ``files`` mapping
    (``key -> {"filename", "sha256"}``, digests of the decompressed bytes)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": fake_images(n_train, seed),
        "train_labels": fake_labels(n_train, seed),
        "test_images": fake_images(n_test, seed + 100),
        "test_labels": fake_labels(n_test, seed + 100),
    }
    files = {}
    for key, array in arrays.items():
        path = write_idx(directory / MNIST_FILES[key], array, compresslevel=1)
        files[key] = {"filename": path.name, "sha256": decompressed_sha256(path)}
    return files
