"""Read and write the IDX format of the MNIST files, with validation.

An IDX file (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS") is

    magic     4 bytes: 0x00 0x00, a data type code, the number of dimensions ``ndim``
    dims      ``ndim`` unsigned 32-bit big-endian integers, the size of each dimension
    data      prod(dims) values of that type, big-endian, C order (last dimension fastest)

Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
MNIST images are ``uint8 (n, 28, 28)`` (magic 0x00000803), labels ``uint8 (n,)`` (0x00000801).

Files are usually gzip-compressed: a file whose name ends in ``.gz`` or whose bytes start with the
gzip magic ``1f 8b`` is decompressed while it is read. Every problem with the bytes of a file is
reported as one :class:`IDXError` (a ``ValueError``) naming the file; other exceptions come only
from the operating system (a missing or unreadable file raises ``OSError``).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path
from typing import IO

import numpy as np

from pipeline.errors import PipelineError
from pipeline.files import GZIP_ERRORS, atomic_write

GZIP_MAGIC = b"\x1f\x8b"

# Type code -> big-endian dtype as stored in the file.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}
_CODE_NAMES = {code: dt.newbyteorder("=").name for code, dt in IDX_DTYPES.items()}

_MAX_NDIM = 32  # NumPy's limit (64 in NumPy 2); no real IDX file comes close
_MAX_GZIP_RATIO = 1100  # deflate expands at most ~1032:1; bounds what a .gz can hold
_CHUNK = 1 << 20

_ADVICE = (
    "The file is corrupt, truncated or not the expected IDX file: delete it and run `dvc repro` "
    "again to download a fresh copy"
)


class IDXError(PipelineError, ValueError):
    """The bytes of a file are not a valid IDX file (or not the one expected).

    ``path`` is the file, ``problem`` what is wrong with it; ``str()`` adds what to do.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(path, problem)
        self.path = Path(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}. {_ADVICE}."


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or raw) into an array of its shape, native byte order.

    Raises :class:`IDXError` for a bad magic number, an unknown type code, a truncated header,
    data shorter or longer than the dimensions say, or corrupt gzip data.
    """
    path = Path(path)
    with path.open("rb") as raw:
        file_size = os.fstat(raw.fileno()).st_size
        compressed = path.name.endswith(".gz") or raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return _parse(raw, path, max_data_bytes=file_size)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse(stream, path, max_data_bytes=file_size * _MAX_GZIP_RATIO + 1024)
        except GZIP_ERRORS as err:
            problem = f"corrupt or truncated gzip data ({err or type(err).__name__})"
            raise IDXError(path, problem) from None


def read_images(
    path: str | os.PathLike, rows: int | None = 28, cols: int | None = 28
) -> np.ndarray:
    """Images as ``uint8 (n, rows, cols)``; ``rows``/``cols`` None accepts any size."""
    array = read_idx(path)
    _check_uint8(path, array, "images")
    if array.ndim != 3:
        raise IDXError(path, f"expected images (n, rows, cols), the file holds shape {array.shape}")
    for name, want, got in (("rows", rows, array.shape[1]), ("columns", cols, array.shape[2])):
        if want is not None and got != want:
            raise IDXError(path, f"images have {got} {name}, expected {want} (shape {array.shape})")
    return array


def read_labels(path: str | os.PathLike, n_classes: int = 10) -> np.ndarray:
    """Labels as ``uint8 (n,)``, each in ``0 .. n_classes - 1``."""
    array = read_idx(path)
    _check_uint8(path, array, "labels")
    if array.ndim != 1:
        raise IDXError(path, f"expected labels (n,) but the file holds shape {array.shape}")
    if array.size:
        bad = np.flatnonzero(array >= n_classes)
        if bad.size:
            raise IDXError(
                path,
                f"{bad.size} labels are outside 0..{n_classes - 1} "
                f"(the first at index {bad[0]} is {array[bad[0]]})",
            )
    return array


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compresslevel: int = 6) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``), atomically.

    The dtype must be one IDX knows (uint8, int8, int16, int32, float32, float64) and the array
    must have 1 to 255 dimensions. The gzip header carries no name or time, so the bytes depend
    only on the array.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of {_CODE_NAMES}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    with atomic_write(path) as fh:
        if path.name.endswith(".gz"):
            with gzip.GzipFile("", "wb", compresslevel, fh, mtime=0) as gz:
                gz.write(payload)
        else:
            fh.write(payload)
    return path


# --------------------------------------------------------------------------------- internals
def _check_uint8(path: str | os.PathLike, array: np.ndarray, what: str) -> None:
    if array.dtype != np.uint8:
        raise IDXError(
            path, f"MNIST {what} are uint8 (type code 0x08), the file holds {array.dtype}"
        )


def _read_up_to(stream: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream."""
    parts, missing = [], n
    while missing > 0:
        chunk = stream.read(missing)
        if not chunk:
            break
        parts.append(chunk)
        missing -= len(chunk)
    return b"".join(parts)


def _count_rest(stream: IO[bytes]) -> int:
    count = 0
    while chunk := stream.read(_CHUNK):
        count += len(chunk)
    return count


def _parse(stream: IO[bytes], path: Path, max_data_bytes: int) -> np.ndarray:
    magic = _read_up_to(stream, 4)
    if len(magic) < 4:
        what = "empty" if not magic else f"only {len(magic)} bytes long"
        raise IDXError(path, f"the file is {what}; an IDX header needs at least 4 bytes")
    if magic[:2] != b"\x00\x00":
        raise IDXError(
            path,
            f"bad magic number 0x{magic.hex().upper()}: an IDX file starts with two zero bytes",
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} {name}" for c, name in _CODE_NAMES.items())
        raise IDXError(path, f"unknown data type code 0x{code:02X} in the magic number ({known})")
    if not 1 <= ndim <= _MAX_NDIM:
        raise IDXError(
            path, f"the magic number declares {ndim} dimensions (1..{_MAX_NDIM} allowed)"
        )
    dims_bytes = _read_up_to(stream, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise IDXError(
            path,
            f"truncated header: {ndim} dimension sizes need {4 * ndim} bytes after the magic "
            f"number, the file has {len(dims_bytes)}",
        )
    shape = struct.unpack(f">{ndim}I", dims_bytes)
    dtype = IDX_DTYPES[code]
    n_bytes = math.prod(shape) * dtype.itemsize
    if n_bytes > max_data_bytes:
        raise IDXError(
            path,
            f"truncated data: shape {shape} of {dtype.newbyteorder('=').name} needs {n_bytes} "
            f"bytes, more than the file can hold",
        )
    buffer = np.empty(n_bytes, dtype=np.uint8)
    view, filled = memoryview(buffer), 0
    while filled < n_bytes:
        got = stream.readinto(view[filled : filled + _CHUNK])
        if not got:
            break
        filled += got
    if filled < n_bytes:
        raise IDXError(
            path,
            f"truncated data: shape {shape} of {dtype.newbyteorder('=').name} needs {n_bytes} "
            f"bytes after the header, the file has {filled}",
        )
    extra = _count_rest(stream)
    if extra:
        raise IDXError(
            path,
            f"{extra} bytes of trailing data after the {n_bytes} bytes that shape {shape} declares",
        )
    array = buffer.view(dtype).reshape(shape)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    else:
        array = array.view(dtype.newbyteorder("="))
    return array
