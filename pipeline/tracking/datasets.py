"""The data a run trained and was scored on, as MLflow dataset inputs.

Each part of the split a run uses (``training``, ``validation``, ``test``: the contexts of
:data:`pipeline.names.DATASETS`) is logged as a dataset named ``mnist-train``,
``mnist-validation`` or ``mnist-test``, identified by the SHA-256 of its arrays (what this run
really saw, after ``data.train_limit``), with the SHA-256 of the MNIST source files it was made
from as tags. MLflow's digest column holds 36 characters: it gets the first 16 hex digits; the
whole digest is in the dataset's profile and tags.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from mlflow.data.schema import TensorDatasetSchema
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from pipeline.names import DATASETS, MNIST_FILES

#: The MNIST files each part of the split is made from (keys of ``data.files``).
_SOURCES = {
    "training": ("train_images", "train_labels"),
    "validation": ("train_images", "train_labels"),
    "test": ("test_images", "test_labels"),
}

#: Characters of the SHA-256 that MLflow shows as the dataset's digest.
DIGEST_CHARS = 16


@dataclass(frozen=True)
class DatasetRef:
    """What a metric names to say which data it was measured on."""

    name: str
    digest: str


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over the dtype, shape and bytes of each array, in order."""
    sha = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        sha.update(f"{array.dtype.str}{array.shape}".encode())
        sha.update(memoryview(array).cast("B"))
    return sha.hexdigest()


def _tensor(array: np.ndarray) -> Schema:
    return Schema([TensorSpec(array.dtype, (-1, *array.shape[1:]))])


def dataset_input(
    context: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    source: str,
    source_digests: Mapping[str, str],
) -> tuple[DatasetInput, DatasetRef]:
    """The dataset input of one part of the split (``context``: a key of
    :data:`pipeline.names.DATASETS`), and how metrics refer to it. ``source_digests``: the
    SHA-256 of each MNIST file by file name (``.gz`` or not); those it was made from become tags."""
    sha256 = array_digest(X, y)
    name = DATASETS[context]
    schema = TensorDatasetSchema(features=_tensor(X), targets=_tensor(y))
    profile = {"num_rows": len(y), "features_shape": list(X.shape), "sha256": sha256}
    dataset = Dataset(
        name=name,
        digest=sha256[:DIGEST_CHARS],
        source_type="local",
        source=json.dumps({"uri": source}),
        schema=json.dumps(schema.to_dict()),
        profile=json.dumps(profile),
    )
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag("sha256", sha256)]
    made_from = {MNIST_FILES[key].removesuffix(".gz") for key in _SOURCES[context]}
    tags += [
        InputTag(f"source.sha256.{file}", digest)
        for file, digest in source_digests.items()
        if file.removesuffix(".gz") in made_from
    ]
    return DatasetInput(dataset, tags), DatasetRef(name, dataset.digest)
