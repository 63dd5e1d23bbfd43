"""MNIST IDX files -> one ``.npz`` of float32 features plus a JSON summary.

Reads the four files from ``data/raw/`` (validated by :mod:`pipeline.data.idx`), checks the counts
(60,000 training and 10,000 test images, as many labels as images), flattens each image to 784
features scaled to [0, 1] as float32 (pixel / 255), and carves a seeded, stratified validation
split of ``data.validation_size`` images out of the training images.

Outputs (in ``data/processed/``, each written atomically):

``mnist.npz``
    ``X_train, X_val, X_test``: float32 ``(n, 784)`` in [0, 1];
    ``y_train, y_val, y_test``: uint8 ``(n,)`` digit labels 0..9.
    Training and validation images keep the order they have in the training file (the split is
    a choice of rows, not a shuffle); the test images keep the order of the test file.
``summary.json``
    ``split_seed``, ``validation_size``, ``split_sha256`` (:func:`split_digest` of the arrays in
    ``mnist.npz``: what every run records and ``pipeline.reproduce`` compares), ``dtype``,
    ``label_dtype``, ``scaling``, ``shapes``
    (array name -> shape), ``class_counts`` (split -> digit -> count), ``sources`` (file key ->
    filename and SHA-256 of its decompressed bytes) and ``sha256`` (the same digests keyed by the
    decompressed file name, as in the mirror's SHA256SUMS: ``train-images-idx3-ubyte -> hex``).

The ``preprocess`` stage calls :func:`preprocess` with ``data.split_seed``, ``data.validation_size``
and the file names of ``data.files``; ``data.train_limit`` is applied when training, not here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.idx import GZIP_MAGIC, read_images, read_labels
from pipeline.errors import PipelineError
from pipeline.files import (
    atomic_write,
    remove_stale_temp_files,
    require,
    sha256_file,
    write_json,
)
from pipeline.names import MNIST_COUNTS, MNIST_FILES, N_CLASSES, PROCESSED, SUMMARY

log = logging.getLogger(__name__)

FEATURE_DTYPE = np.float32


class PreprocessError(PipelineError, ValueError):
    """Inputs or settings the preprocess stage cannot work with (wrong counts, bad split size)."""


def load_split(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    expected_count: int | None = None,
    rows: int | None = 28,
    cols: int | None = 28,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (n, rows, cols)`` and labels ``uint8 (n,)`` of one split, counts checked.

    ``expected_count`` None checks only that there are as many labels as images.
    """
    for path in (images_path, labels_path):
        require(path, "download")
    images = read_images(images_path, rows=rows, cols=cols)
    labels = read_labels(labels_path)
    if expected_count is not None:
        checks = ((images_path, "images", len(images)), (labels_path, "labels", len(labels)))
        for path, what, n in checks:
            if n != expected_count:
                raise PreprocessError(
                    f"{path} holds {n} {what}, expected {expected_count}; delete it and run "
                    "`dvc repro` again to download a fresh copy"
                )
    if len(images) != len(labels):
        raise PreprocessError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; they must match one to one"
        )
    return images, labels


def validation_counts(class_counts: Sequence[int], validation_size: int) -> np.ndarray:
    """How many examples of each class go to validation: proportional, summing to the size.

    Largest-remainder rounding of ``validation_size * count / total`` in exact integers; ties go
    to the earlier class. Each result is at most its class count when ``validation_size < total``.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= validation_size < max(total, 1):
        raise PreprocessError(
            f"data.validation_size must be between 0 and {total - 1} (there are {total} training "
            f"images), got {validation_size}"
        )
    if total == 0:
        return np.zeros_like(counts)
    floor, remainder = np.divmod(validation_size * counts, total)
    short = validation_size - int(floor.sum())
    floor[np.argsort(-remainder, kind="stable")[:short]] += 1
    return floor


def stratified_split(
    labels: np.ndarray, validation_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` into ``labels``: a stratified random choice of ``validation_size``.

    For each class in ascending order, ``rng.permutation`` of its indices picks its share (see
    :func:`validation_counts`). Both index arrays are sorted ascending, so each split keeps the
    original order; together they are a partition of ``range(len(labels))``.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    n_val = validation_counts(counts, validation_size)
    is_val = np.zeros(len(labels), dtype=bool)
    for cls, k in zip(classes, n_val, strict=True):
        members = np.flatnonzero(labels == cls)
        is_val[rng.permutation(members)[:k]] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def to_features(images: np.ndarray) -> np.ndarray:
    """``uint8 (n, rows, cols)`` -> float32 ``(n, rows * cols)`` in [0, 1] (pixel / 255)."""
    flat = images.reshape(len(images), math.prod(images.shape[1:]))
    return np.divide(flat, FEATURE_DTYPE(255), dtype=FEATURE_DTYPE)


def class_counts(labels: np.ndarray, n_classes: int = N_CLASSES) -> dict[str, int]:
    """``{"0": count, ..., "9": count}`` (string keys, for JSON)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return {str(c): int(n) for c, n in enumerate(counts)}


def split_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a processed split: each array's name, dtype, shape and bytes, in name order.
    The ``.npz`` file's own bytes would not do: its zip entries carry the time they were written."""
    sha = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        sha.update(f"{name}:{array.dtype.str}{array.shape};".encode())
        sha.update(array.reshape(-1).view(np.uint8).data)  # no copy; empty arrays too
    return sha.hexdigest()


def content_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content: of its decompressed bytes if it is gzip-compressed."""
    path = Path(path)
    with path.open("rb") as fh:
        gz = path.name.endswith(".gz") or fh.read(2) == GZIP_MAGIC
    return sha256_file(path, decompress=gz)


def preprocess(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    filenames: Mapping[str, str],
    *,
    validation_size: int,
    split_seed: int,
    expected_counts: Mapping[str, int] | None = MNIST_COUNTS,
    rows: int | None = 28,
    cols: int | None = 28,
) -> dict[str, Any]:
    """Write ``out_dir/mnist.npz`` and ``out_dir/summary.json``; return the summary.

    ``filenames`` maps ``train_images, train_labels, test_images, test_labels`` to file names in
    ``raw_dir``. ``expected_counts`` (``{"train": n, "test": n}``, default MNIST's) or None to
    accept any count. The split uses one ``np.random.default_rng(split_seed)``.
    """
    if isinstance(validation_size, bool) or not isinstance(validation_size, int | np.integer):
        raise PreprocessError(f"data.validation_size must be an integer, got {validation_size!r}")
    seed = split_seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise PreprocessError(f"data.split_seed must be a non-negative integer, got {seed!r}")
    missing = [key for key in MNIST_FILES if key not in filenames]
    if missing:
        raise PreprocessError(f"data.files lacks {', '.join(missing)}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    paths = {key: raw_dir / filenames[key] for key in MNIST_FILES}
    expected = expected_counts or {}

    train_images, train_labels = load_split(
        paths["train_images"], paths["train_labels"], expected.get("train"), rows, cols
    )
    test_images, test_labels = load_split(
        paths["test_images"], paths["test_labels"], expected.get("test"), rows, cols
    )
    rng = np.random.default_rng(int(seed))
    train_index, val_index = stratified_split(train_labels, int(validation_size), rng)

    arrays = {
        "X_train": to_features(train_images[train_index]),
        "y_train": train_labels[train_index],
        "X_val": to_features(train_images[val_index]),
        "y_val": train_labels[val_index],
    }
    del train_images
    arrays["X_test"] = to_features(test_images)
    arrays["y_test"] = test_labels
    del test_images

    out_dir.mkdir(parents=True, exist_ok=True)
    npz_path, summary_path = out_dir / PROCESSED.name, out_dir / SUMMARY.name
    for target in (npz_path, summary_path):
        remove_stale_temp_files(target)
    with atomic_write(npz_path) as fh:
        np.savez(fh, **arrays)

    summary = {
        "split_seed": int(seed),
        "validation_size": int(validation_size),
        "split_sha256": split_digest(arrays),
        "dtype": np.dtype(FEATURE_DTYPE).name,
        "label_dtype": arrays["y_train"].dtype.name,
        "scaling": "pixel / 255, in [0, 1]",
        "shapes": {name: list(array.shape) for name, array in arrays.items()},
        "class_counts": {
            split: class_counts(arrays[f"y_{split}"]) for split in ("train", "val", "test")
        },
        "sources": {
            key: {"filename": path.name, "sha256": content_sha256(path)}
            for key, path in paths.items()
        },
    }
    summary["sha256"] = {
        source["filename"].removesuffix(".gz"): source["sha256"]
        for source in summary["sources"].values()
    }
    write_json(summary_path, summary)
    log.info(
        "preprocess: %d train, %d validation, %d test examples -> %s, %s",
        len(arrays["y_train"]),
        len(arrays["y_val"]),
        len(arrays["y_test"]),
        npz_path,
        summary_path,
    )
    return summary
