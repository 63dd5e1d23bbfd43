"""The preprocess stage on tiny fake MNIST files (50 training, 20 test images of 28x28)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import pipeline.preprocess as pre
from pipeline.data.idx import IDXError, write_idx
from pipeline.data.mnist import (
    PreprocessError,
    preprocess,
    split_digest,
    stratified_split,
    validation_counts,
)
from pipeline.names import MNIST_FILES

from helpers.idx import (
    fake_images,
    fake_labels,
    image_indices,
    write_fake_mnist,
)

N_TRAIN, N_TEST = 50, 20
TINY = {"train": N_TRAIN, "test": N_TEST}


@pytest.fixture
def raw(tmp_path):
    directory = tmp_path / "raw"
    files = write_fake_mnist(directory, N_TRAIN, N_TEST)
    return directory, files


def run(raw_dir, out_dir, validation_size=10, seed=0, **kwargs):
    kwargs.setdefault("expected_counts", TINY)
    preprocess(
        raw_dir, out_dir, MNIST_FILES, validation_size=validation_size, split_seed=seed, **kwargs
    )
    with np.load(out_dir / "mnist.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    summary = json.loads((out_dir / "summary.json").read_text())
    return arrays, summary


def test_outputs(raw, tmp_path):
    raw_dir, _ = raw
    out = tmp_path / "processed"
    arrays, _ = run(raw_dir, out, validation_size=10)
    assert sorted(p.name for p in out.iterdir()) == ["mnist.npz", "summary.json"]
    assert sorted(arrays) == ["X_test", "X_train", "X_val", "y_test", "y_train", "y_val"]
    for split, n in (("train", 40), ("val", 10), ("test", 20)):
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        assert X.shape == (n, 784) and X.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.uint8
        assert 0.0 <= X.min() and X.max() <= 1.0
    # The test split is the test file, in order, divided by 255 (exact in float64, then rounded).
    expected = (fake_images(N_TEST, 100).reshape(N_TEST, 784) / 255.0).astype(np.float32)
    np.testing.assert_array_equal(arrays["X_test"], expected)
    np.testing.assert_array_equal(arrays["y_test"], fake_labels(N_TEST, 100))
    assert arrays["X_train"].max() == 1.0  # random pixels include 255


def test_split_is_a_stratified_partition_in_original_order(raw, tmp_path):
    raw_dir, _ = raw
    arrays, _ = run(raw_dir, tmp_path / "out", validation_size=15)
    images, labels = fake_images(N_TRAIN), fake_labels(N_TRAIN)
    train_idx, val_idx = image_indices(arrays["X_train"]), image_indices(arrays["X_val"])
    assert len(val_idx) == 15
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(50))
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)  # original order
    for split, idx in (("train", train_idx), ("val", val_idx)):
        np.testing.assert_array_equal(arrays[f"y_{split}"], labels[idx])
        np.testing.assert_array_equal(
            arrays[f"X_{split}"], images[idx].reshape(-1, 784).astype(np.float32) / 255
        )
    # Per class: validation share is 15/50 of the class, rounded down or up.
    class_sizes = np.bincount(labels, minlength=10)
    val_sizes = np.bincount(arrays["y_val"], minlength=10)
    share = 15 * class_sizes / 50
    assert np.all(val_sizes >= np.floor(share)) and np.all(val_sizes <= np.ceil(share))


def test_same_seed_same_split_other_seed_other_split(raw, tmp_path):
    raw_dir, _ = raw
    a, _ = run(raw_dir, tmp_path / "a", seed=7)
    b, _ = run(raw_dir, tmp_path / "b", seed=7)
    c, _ = run(raw_dir, tmp_path / "c", seed=8)
    for key in a:
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["X_val"], c["X_val"])
    assert (tmp_path / "a" / "mnist.npz").read_bytes() == (
        tmp_path / "b" / "mnist.npz"
    ).read_bytes()


def test_summary(raw, tmp_path):
    raw_dir, files = raw
    arrays, summary = run(raw_dir, tmp_path / "out", validation_size=10, seed=3)
    assert summary["split_seed"] == 3 and summary["validation_size"] == 10
    assert summary["split_sha256"] == split_digest(arrays)
    assert summary["dtype"] == "float32" and summary["label_dtype"] == "uint8"
    assert summary["shapes"] == {key: list(array.shape) for key, array in arrays.items()}
    for split in ("train", "val", "test"):
        counts = np.bincount(arrays[f"y_{split}"], minlength=10)
        assert summary["class_counts"][split] == {str(c): int(n) for c, n in enumerate(counts)}
    assert summary["sources"] == files  # file key -> filename and decompressed sha256
    assert summary["sha256"] == {
        spec["filename"].removesuffix(".gz"): spec["sha256"] for spec in files.values()
    }
    assert summary["sha256"]["train-images-idx3-ubyte"] == files["train_images"]["sha256"]


def test_validation_size_zero(raw, tmp_path):
    raw_dir, _ = raw
    arrays, summary = run(raw_dir, tmp_path / "out", validation_size=0)
    assert arrays["X_val"].shape == (0, 784) and arrays["X_val"].dtype == np.float32
    assert arrays["y_val"].shape == (0,)
    assert arrays["X_train"].shape == (50, 784)
    assert sum(summary["class_counts"]["val"].values()) == 0


@pytest.mark.parametrize("size", [50, 60_000, -1])
def test_validation_size_out_of_range(raw, tmp_path, size):
    raw_dir, _ = raw
    with pytest.raises(PreprocessError, match=rf"between 0 and 49 .*got {size}"):
        run(raw_dir, tmp_path / "out", validation_size=size)
    assert not (tmp_path / "out" / "mnist.npz").exists()


def test_validation_counts():
    assert validation_counts([10, 10, 10], 0).tolist() == [0, 0, 0]
    assert validation_counts([10, 10, 10], 3).tolist() == [1, 1, 1]
    assert validation_counts([10, 10, 10], 4).tolist() == [2, 1, 1]  # tie: earlier class
    assert validation_counts([1, 99], 10).tolist() == [0, 10]
    counts = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])  # MNIST
    for size in (1, 7, 5000, 59_999):
        shares = validation_counts(counts, size)
        assert shares.sum() == size and np.all(shares <= counts)
        assert np.all(np.abs(shares - size * counts / counts.sum()) < 1)


def test_stratified_split_uses_the_generator():
    labels = fake_labels(200)
    a = stratified_split(labels, 30, np.random.default_rng(1))
    b = stratified_split(labels, 30, np.random.default_rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    train, val = a
    assert len(val) == 30 and len(train) == 170


@pytest.mark.parametrize(
    ("key", "n", "fragment"),
    [
        ("train_images", 49, "holds 49 images, expected 50"),
        ("train_labels", 51, "holds 51 labels, expected 50"),
        ("test_images", 19, "holds 19 images, expected 20"),
    ],
)
def test_count_mismatch_names_the_file(raw, tmp_path, key, n, fragment):
    raw_dir, _ = raw
    array = fake_labels(n) if key.endswith("labels") else fake_images(n)
    write_idx(raw_dir / MNIST_FILES[key], array)
    with pytest.raises(PreprocessError) as info:
        run(raw_dir, tmp_path / "out")
    assert str(raw_dir / MNIST_FILES[key]) in str(info.value)
    assert fragment in str(info.value)


def test_images_and_labels_must_match_without_expected_counts(raw, tmp_path):
    raw_dir, _ = raw
    write_idx(raw_dir / MNIST_FILES["test_labels"], fake_labels(19))
    with pytest.raises(PreprocessError) as info:
        run(raw_dir, tmp_path / "out", expected_counts=None)
    message = str(info.value)
    assert MNIST_FILES["test_images"] in message and MNIST_FILES["test_labels"] in message
    assert "20 images" in message and "19" in message


def test_mnist_counts_are_the_default(raw, tmp_path):
    raw_dir, _ = raw
    with pytest.raises(PreprocessError, match="holds 50 images, expected 60000"):
        preprocess(raw_dir, tmp_path / "out", MNIST_FILES, validation_size=10, split_seed=0)


def test_corrupt_input_is_an_idx_error(raw, tmp_path):
    raw_dir, _ = raw
    path = raw_dir / MNIST_FILES["train_images"]
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        run(raw_dir, tmp_path / "out")


def write_params(tmp_path, files, validation_size=10, split_seed=0, seed=0):
    params = tmp_path / "params.yaml"
    data = {"files": files, "validation_size": validation_size, "train_limit": None}
    data["split_seed"] = split_seed
    params.write_text(yaml.safe_dump({"seed": seed, "data": data}))
    return params


def test_main(raw, tmp_path, monkeypatch):
    raw_dir, files = raw
    monkeypatch.setattr(pre, "MNIST_COUNTS", TINY)
    # The split is data.split_seed's: the training seed plays no part in it.
    params = write_params(tmp_path, files, validation_size=5, split_seed=2, seed=9)
    out = tmp_path / "processed"
    assert pre.main(["--params", str(params), "--raw", str(raw_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation_size"] == 5 and summary["split_seed"] == 2
    other = write_params(tmp_path, files, validation_size=5, split_seed=2, seed=1)
    again = tmp_path / "again"
    assert pre.main(["--params", str(other), "--raw", str(raw_dir), "--out", str(again)]) == 0
    assert (
        json.loads((again / "summary.json").read_text())["split_sha256"]
        == (summary["split_sha256"])
    )
    assert summary["shapes"]["X_train"] == [45, 784]


def test_main_errors_are_one_clear_message(raw, tmp_path, capsys):
    raw_dir, files = raw
    params = write_params(tmp_path, files)
    out = tmp_path / "processed"
    assert pre.main(["--params", str(params), "--raw", str(raw_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "expected 60000" in err and "Traceback" not in err
    # a missing input: nothing was started (exit code 2)
    assert pre.main(["--params", str(params), "--raw", str(tmp_path / "none")]) == 2
    assert "run `dvc repro download` first" in capsys.readouterr().err
    assert not out.exists()


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        pre.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--raw" in text and "--out" in text and "--params" in text
