"""IDX parsing: round trips, every kind of damage reported as IDXError naming the file."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.idx import IDXError, read_idx, read_images, read_labels, write_idx

from helpers.idx import fake_images, fake_labels


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """Raw IDX bytes written independently of write_idx (type code from the dtype)."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[array.dtype.str[1:]] if code is None else code
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def expect_idx_error(path: Path, *fragments: str, reader=read_idx) -> IDXError:
    with pytest.raises(IDXError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    assert "dvc repro" in message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize(
    "array",
    [
        fake_images(7, rows=28, cols=28),
        fake_labels(13),
        np.arange(-60, 60, dtype=np.int8).reshape(2, 3, 20),
        np.arange(-300, 300, 7, dtype=np.int16),
        np.arange(24, dtype=np.int32).reshape(2, 3, 4) * -100_000,
        np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        np.linspace(-1e300, 1e300, 5, dtype=np.float64),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=["images", "labels", "int8", "int16", "int32", "float32", "float64", "empty"],
)
def test_round_trip(tmp_path, array, suffix):
    path = write_idx(tmp_path / f"data.idx{suffix}", array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # a writable array of its own
    raw = gzip.decompress(path.read_bytes()) if suffix else path.read_bytes()
    assert raw == idx_bytes(array)  # the exact on-disk format, written independently


def test_write_idx_is_deterministic_and_mnist_magic(tmp_path):
    images = fake_images(3)
    a = write_idx(tmp_path / "a.gz", images).read_bytes()
    b = write_idx(tmp_path / "b.gz", images).read_bytes()
    assert a == b
    assert gzip.decompress(a)[:4] == b"\x00\x00\x08\x03"
    assert not list(tmp_path.glob(".*.tmp"))


def test_gzip_detected_by_magic_without_gz_suffix(tmp_path):
    labels = fake_labels(20)
    path = tmp_path / "labels.idx"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_labels(path), labels)


def test_read_images_and_labels(tmp_path):
    images, labels = fake_images(5), fake_labels(5)
    img = read_images(write_idx(tmp_path / "i.gz", images))
    lab = read_labels(write_idx(tmp_path / "l.gz", labels))
    assert img.shape == (5, 28, 28) and img.dtype == np.uint8
    assert lab.shape == (5,) and lab.dtype == np.uint8
    small = read_images(write_idx(tmp_path / "s.gz", fake_images(2, rows=3, cols=4)), 3, 4)
    assert small.shape == (2, 3, 4)


@pytest.mark.parametrize("compressed", [True, False])
def test_corrupt_magic(tmp_path, compressed):
    data = b"\x01" + idx_bytes(fake_labels(10))[1:]
    path = tmp_path / ("bad.gz" if compressed else "bad.idx")
    path.write_bytes(gzip.compress(data) if compressed else data)
    expect_idx_error(path, "bad magic number 0x01000801")


def test_unknown_dtype_code(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(idx_bytes(fake_labels(10), code=0x07))
    expect_idx_error(path, "unknown data type code 0x07")


def test_zero_dimensions(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x00\x00\x08\x00\x05")
    expect_idx_error(path, "declares 0 dimensions")


@pytest.mark.parametrize("cut", [1, 783])
def test_truncated_data(tmp_path, cut):
    data = idx_bytes(fake_images(2))
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(data[:-cut]))
    expect_idx_error(path, "truncated data", f"needs {2 * 784} bytes", f"has {2 * 784 - cut}")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(fake_labels(10)) + b"garbage")
    expect_idx_error(path, "7 bytes of trailing data")


@pytest.mark.parametrize("length", [0, 3, 4, 9, 15])
def test_truncated_header(tmp_path, length):
    path = tmp_path / "head.idx"
    path.write_bytes(idx_bytes(fake_images(1))[:length])
    error = expect_idx_error(path)
    assert ("header" in error.problem) or ("empty" in error.problem)


def test_huge_declared_shape_is_an_error_not_an_allocation(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(b"\x00\x00\x0e\x03" + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1))
    expect_idx_error(path, "truncated data", "more than the file can hold")
    gz = tmp_path / "huge.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    expect_idx_error(gz, "truncated data")


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(fake_images(4)))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    cases = {
        "flipped.gz": bytes(flipped),
        "cut.gz": good[: len(good) // 2],
        "notgzip.gz": b"this is an HTML error page, not a gzip file",
        "badcrc.gz": good[:-8] + bytes(8),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        expect_idx_error(path, "gzip")


def test_wrong_image_dims(tmp_path):
    path = write_idx(tmp_path / "img.gz", fake_images(3, rows=27, cols=28))
    expect_idx_error(path, "27 rows, expected 28", reader=read_images)
    path = write_idx(tmp_path / "img2.gz", fake_images(3, rows=28, cols=29))
    expect_idx_error(path, "29 columns, expected 28", reader=read_images)
    path = write_idx(tmp_path / "flat.gz", np.zeros((3, 784), np.uint8))
    expect_idx_error(path, "shape (3, 784)", reader=read_images)
    path = write_idx(tmp_path / "float.gz", np.zeros((3, 28, 28), np.float32))
    expect_idx_error(path, "uint8", reader=read_images)


def test_bad_labels(tmp_path):
    path = write_idx(tmp_path / "l.gz", np.array([1, 2, 10, 3], np.uint8))
    expect_idx_error(path, "outside 0..9", "index 2 is 10", reader=read_labels)
    path = write_idx(tmp_path / "l2.gz", np.zeros((2, 2), np.uint8))
    expect_idx_error(path, "shape (2, 2)", reader=read_labels)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.gz")


# ------------------------------------------------------------------- property: never crashes
_PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("property")


def _parse_or_idx_error(directory: Path, data: bytes, name: str) -> None:
    path = directory / name
    path.write_bytes(data)
    try:
        array = read_idx(path)
    except IDXError as err:
        assert str(path) in str(err)
        return
    assert isinstance(array, np.ndarray)


@_PROPERTY
@given(data=st.binary(max_size=300), name=st.sampled_from(["x.gz", "x.idx"]))
def test_random_bytes_give_an_array_or_idx_error(scratch, data, name):
    _parse_or_idx_error(scratch, data, name)
    _parse_or_idx_error(scratch, b"\x00\x00" + data, name)  # past the first check more often


_VALID = [
    idx_bytes(fake_images(2, rows=3, cols=4)),
    idx_bytes(fake_labels(9)),
    idx_bytes(np.arange(6, dtype=np.float32).reshape(2, 3)),
    idx_bytes(np.arange(5, dtype=np.int16)),
]


@st.composite
def mutated_files(draw):
    data = bytearray(draw(st.sampled_from(_VALID)))
    if draw(st.booleans()):
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "append", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=8))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 4))]
    return bytes(data)


@_PROPERTY
@given(data=mutated_files(), name=st.sampled_from(["m.gz", "m.idx"]))
def test_mutated_valid_files_give_an_array_or_idx_error(scratch, data, name):
    _parse_or_idx_error(scratch, data, name)
