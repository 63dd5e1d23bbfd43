"""Small helpers shared by the stage modules: params.yaml, atomic writes, SHA-256 digests.

Temporary files follow one naming rule, ``.<name>.<random>.tmp`` beside the target (the same rule
as ``mlp.MLP.save``), so a stage can find and remove the leftovers of an interrupted run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20  # bytes read at a time when hashing or copying


class ParamsError(ValueError):
    """params.yaml is missing, unreadable, or lacks a key a stage needs."""


def temp_files_for(path: str | os.PathLike) -> list[Path]:
    """Leftover temporary files of earlier atomic writes to ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete leftovers of interrupted atomic writes to ``path``; return what was removed."""
    removed = []
    for tmp in temp_files_for(path):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` all-or-nothing.

    Yields an open temporary file in the same directory (its ``.name`` is the temp path). When the
    block ends normally the file is flushed, fsync'ed and renamed over ``path`` (with the usual
    permissions, 0o666 minus the umask); when it raises, the temp file is removed and ``path`` is
    left as it was. Verify the content inside the block.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        kwargs = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (plus a newline), atomically."""
    path = Path(path)
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, *, decompress: bool = False) -> str:
    """Hex SHA-256 of a file's bytes, or with ``decompress=True`` of its gunzipped bytes.

    Reads in chunks. A corrupt or truncated gzip raises ``gzip.BadGzipFile``, ``EOFError`` or
    ``zlib.error`` (see :data:`GZIP_ERRORS`).
    """
    digest = hashlib.sha256()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# What reading a damaged gzip stream can raise (BadGzipFile is an OSError).
GZIP_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error)


def setup_logging(level: int = logging.INFO) -> None:
    """Plain ``message`` lines on stderr for the stage scripts (a no-op if already configured)."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


def safe_name(value: object, fallback: str = "unnamed") -> str:
    """``value`` as one file-name component: letters, digits, ``.``, ``_`` and ``-`` only.

    For names derived from configuration values: no separators, no ``..``, no leading dot, so a
    value can never reach outside the folder it is joined to.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._")
    name = re.sub(r"\.{2,}", ".", name)
    return name[:100] or fallback
