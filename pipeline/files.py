"""Files the pipeline writes and reads: atomic writes, JSON, CSV, the per-epoch history, digests.

Every output is written all-or-nothing (:func:`atomic_write`). Temporary files follow one naming
rule, ``.<name>.<random>.tmp`` beside the target (the same rule as ``mlp.MLP.save``), so a stage
can find and remove the leftovers of an interrupted run.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pipeline.errors import InputError

_CHUNK = 1 << 20  # bytes read at a time when hashing or copying


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


def require(path: str | os.PathLike, made_by: str | None = None) -> Path:
    """``path``, which must exist: else a ``FileNotFoundError`` that says which stage
    (``made_by``) writes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found{_rerun(made_by)}")
    return path


def _rerun(made_by: str | None) -> str:
    return f": run `dvc repro {made_by}` first" if made_by else ""


def read_json(path: str | os.PathLike, made_by: str | None = None) -> Any:
    """The JSON in ``path`` (see :func:`require`)."""
    return json.loads(require(path, made_by).read_text())


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """A CSV file with one header line, atomically."""
    path = Path(path)
    with atomic_write(path, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_history(path: str | os.PathLike, rows: Sequence[Mapping[str, float]]) -> Path:
    """The per-epoch history (one row per epoch, the columns of :data:`names.CURVES`) as CSV."""
    if not rows:
        raise ValueError(f"no epochs to write to {path}")
    columns = list(rows[0])
    return write_csv(path, columns, ([row[c] for c in columns] for row in rows))


def read_history(path: str | os.PathLike, made_by: str | None = None) -> list[dict[str, float]]:
    """A history written by :func:`write_history`, as rows of floats."""
    path = require(path, made_by)
    with path.open() as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    if not rows:
        raise InputError(f"{path} has no epochs{_rerun(made_by)}")
    return rows


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


def safe_name(value: object, fallback: str = "unnamed") -> str:
    """``value`` as one file-name component: letters, digits, ``.``, ``_`` and ``-`` only.

    For names derived from configuration values: no separators, no ``..``, no leading dot, so a
    value can never reach outside the folder it is joined to.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._")
    name = re.sub(r"\.{2,}", ".", name)
    return name[:100] or fallback
