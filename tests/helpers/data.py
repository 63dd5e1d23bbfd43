"""A tiny preprocessed split, and the real MNIST files when they are on this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline.names import MNIST_FILES

from helpers.project import ROOT


def write_split(folder: Path, n_train: int = 400, n_val: int = 100, n_test: int = 200) -> Path:
    """A small preprocessed split like the preprocess stage's: one bright pixel per class.

    Writes ``folder/mnist.npz`` (float32 images in [0, 1], uint8 labels) and ``summary.json``.
    """
    rng = np.random.default_rng(0)
    arrays = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = rng.integers(0, 10, n)
        X = rng.random((n, 784), dtype=np.float32) * 0.2
        X[np.arange(n), y * 70] += 0.8
        arrays[f"X_{name}"], arrays[f"y_{name}"] = X, y.astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "mnist.npz", **arrays)
    (folder / "summary.json").write_text(
        json.dumps({"sha256": {"train-images-idx3-ubyte": "ab" * 32}, "split_seed": 0})
    )
    return folder / "mnist.npz"


def mnist_mirror() -> Path | None:
    """The real MNIST files in a folder: ``MNIST_MIRROR`` (a folder or a ``file://`` URL), else
    ``../shared/mnist``; None when absent."""
    configured = os.environ.get("MNIST_MIRROR")
    if configured and configured.startswith("file://"):
        from urllib.parse import unquote, urlparse

        configured = unquote(urlparse(configured).path)
    folder = Path(configured) if configured else ROOT.parent / "shared" / "mnist"
    return folder if all((folder / name).exists() for name in MNIST_FILES.values()) else None


def mnist_source() -> str | None:
    """Where the real MNIST files come from, as the download stage takes it: ``MNIST_MIRROR``
    when set (a folder, a ``file://`` or an ``http(s)://`` URL; used as given, so a wrong one
    fails rather than skips), else ``../shared/mnist`` when it holds the files; else None."""
    configured = os.environ.get("MNIST_MIRROR")
    if configured:
        return configured
    folder = mnist_mirror()
    return None if folder is None else str(folder)
