"""Fetch the four MNIST files (into ``data/raw/`` for the ``download`` stage), verified and
atomically.

For each file the sources are tried in order: the environment variable ``MNIST_MIRROR`` if set
(a local directory, a ``file://`` URL or an ``http(s)://`` URL base), then every base URL in
``data.mirrors``. A copy is accepted only if its *decompressed* bytes have the SHA-256 given in
``data.files.<key>.sha256``. A file already in the output folder with the right digest is kept.

Each copy is written to a temporary file beside its destination, verified, then renamed over it,
so a bad or partial file is never left in place. HTTP requests time out after ``data.timeout``
seconds (per connect or read); timeouts, connection errors and HTTP 5xx, 408 and 429 are retried
up to ``data.retries`` attempts per source, waiting ``data.backoff`` seconds and doubling; other
HTTP errors (404, 403, ...) move on to the next source at once. If no source gives a good copy, a
:class:`DownloadError` names the file and, for each source, why it failed.

The ``download`` stage passes ``data.mirrors``, ``data.files``, ``data.timeout``,
``data.retries`` and ``data.backoff``.
"""

from __future__ import annotations

import http
import http.client
import logging
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from pipeline.errors import PipelineError
from pipeline.files import GZIP_ERRORS, atomic_write, remove_stale_temp_files, sha256_file

log = logging.getLogger(__name__)

ENV_MIRROR = "MNIST_MIRROR"
USER_AGENT = "mnist-mlp-pipeline/0.1 (python urllib)"
_CHUNK = 1 << 20


class DownloadError(PipelineError):
    """No source gave a good copy of a file; the message says what each source did wrong."""


class _SourceFailed(Exception):
    """One source did not give a good copy (``reason`` is for the user)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Transient(Exception):
    """A failure worth retrying (timeout, connection error, HTTP 5xx, cut-off body)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------ sources
def candidate_sources(
    filename: str, mirrors: Sequence[str], env_mirror: str | None = None
) -> list[str]:
    """Where to look for ``filename``, in order: ``env_mirror`` (if set), then each mirror.

    A source is a local path or a URL (``file://``, ``http://``, ``https://``) of the file itself.
    """
    bases = ([env_mirror] if env_mirror else []) + list(mirrors)
    return [_join(base, filename) for base in bases]


def _join(base: str, filename: str) -> str:
    scheme = urllib.parse.urlsplit(base).scheme.lower()
    if scheme in ("http", "https", "file"):
        return base.rstrip("/") + "/" + urllib.parse.quote(filename)
    if len(scheme) > 1:  # (one letter would be a Windows drive)
        return base.rstrip("/") + "/" + filename  # unsupported; fails with a clear reason later
    return str(Path(base).expanduser() / filename)


def _local_path(source: str) -> Path | None:
    """The local path of a directory-style or ``file://`` source; None for other URLs."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise _SourceFailed(f"file:// URL with a remote host {parts.netloc!r} is not supported")
        return Path(urllib.request.url2pathname(parts.path))
    if len(parts.scheme) > 1:
        return None
    return Path(source)


# ------------------------------------------------------------------------------------ fetching
def _copy_local(path: Path, out: IO[bytes]) -> None:
    try:
        with path.open("rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)
    except FileNotFoundError:
        raise _SourceFailed("not found") from None
    except IsADirectoryError:
        raise _SourceFailed("is a directory, not a file") from None
    except OSError as err:
        raise _SourceFailed(_describe_oserror(err)) from None


def _describe_oserror(err: BaseException, timeout: float | None = None) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return f"timed out after {timeout:g} s" if timeout is not None else "timed out"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror or err})"
    if isinstance(err, http.client.RemoteDisconnected):
        return "the server closed the connection without a response"
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed after {len(err.partial)} bytes of the body"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[0].lower() + err.strerror[1:]
    return str(err) or type(err).__name__


def _http_status(code: int) -> str:
    try:
        return f"HTTP {code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def _http_get_once(url: str, out: IO[bytes], timeout: float, label: str) -> None:
    """One GET of ``url`` into ``out``; raises _Transient or _SourceFailed."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            with _progress(expected, label) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if expected is not None and received != expected:
                raise _Transient(f"connection closed after {received} of {expected} bytes")
    except urllib.error.HTTPError as err:
        err.close()
        if err.code >= 500 or err.code in (408, 429):
            raise _Transient(_http_status(err.code)) from None
        raise _SourceFailed(_http_status(err.code)) from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, OSError):
            raise _Transient(_describe_oserror(err.reason, timeout)) from None
        raise _SourceFailed(str(err.reason)) from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(_describe_oserror(err, timeout)) from None
    except ValueError as err:  # malformed URL
        raise _SourceFailed(f"invalid URL ({err})") from None


def _http_get(
    url: str,
    out: IO[bytes],
    *,
    timeout: float,
    retries: int,
    backoff: float,
    label: str,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """GET with up to ``retries`` attempts for transient errors, backing off exponentially."""
    attempts = max(1, int(retries))
    for attempt in range(1, attempts + 1):
        out.seek(0)
        out.truncate()
        try:
            _http_get_once(url, out, timeout, label)
            return
        except _Transient as err:
            reason = err.reason
        if attempt < attempts:
            delay = backoff * 2 ** (attempt - 1)
            log.info("%s: %s: %s; retrying in %g s", label, url, reason, delay)
            sleep(delay)
    raise _SourceFailed(reason + (f" (after {attempts} attempts)" if attempts > 1 else ""))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress(total: int | None, label: str) -> Any:
    """A tqdm bar on a terminal (stderr), nothing otherwise."""
    if not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=label, unit="B", unit_scale=True, leave=False)


def _fetch(
    source: str, out: IO[bytes], *, timeout: float, retries: int, backoff: float, label: str
) -> None:
    local = _local_path(source)
    if local is not None:
        _copy_local(local, out)
        return
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme not in ("http", "https"):
        raise _SourceFailed(
            f"unsupported URL scheme {scheme!r} (use a directory, file:// or http(s)://)"
        )
    _http_get(source, out, timeout=timeout, retries=retries, backoff=backoff, label=label)


def _check_digest(path: str | os.PathLike, sha256: str) -> str:
    """The decompressed digest of ``path`` if it is ``sha256``; else _SourceFailed with why."""
    try:
        digest = sha256_file(path, decompress=True)
    except GZIP_ERRORS as err:
        raise _SourceFailed(f"truncated or corrupt gzip ({err or type(err).__name__})") from None
    if digest != sha256.lower():
        raise _SourceFailed(f"digest mismatch (got {digest}, expected {sha256.lower()})")
    return digest


# ------------------------------------------------------------------------------------ public
def download_file(
    filename: str,
    sha256: str,
    out_dir: str | os.PathLike,
    mirrors: Sequence[str],
    *,
    env_mirror: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
) -> Path:
    """Make ``out_dir/filename`` a verified copy; return its path.

    Keeps an existing file whose decompressed SHA-256 is ``sha256``; removes a bad one and stale
    temporary files. Tries :func:`candidate_sources` in order; raises :class:`DownloadError`
    naming the file and every source with its reason if none gives a good copy.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / filename
    for stale in remove_stale_temp_files(dest):
        log.info("%s: removed the leftover temporary file %s", filename, stale.name)
    if dest.exists():
        try:
            digest = _check_digest(dest, sha256)
        except _SourceFailed as err:
            log.warning("%s: the existing copy is bad (%s); removing it", filename, err.reason)
            dest.unlink()
        else:
            log.info(
                "%s: already present with the right digest (sha256 %s), kept", filename, digest[:12]
            )
            return dest

    sources = candidate_sources(filename, mirrors, env_mirror)
    failures: list[tuple[str, str]] = []
    for index, source in enumerate(sources):
        origin = f" ({ENV_MIRROR})" if env_mirror and index == 0 else ""
        try:
            with atomic_write(dest) as tmp:
                _fetch(
                    source, tmp, timeout=timeout, retries=retries, backoff=backoff, label=filename
                )
                tmp.flush()
                digest = _check_digest(tmp.name, sha256)
        except _SourceFailed as err:
            log.info("%s: %s%s: %s", filename, source, origin, err.reason)
            failures.append((source + origin, err.reason))
            continue
        via = f"via {ENV_MIRROR}, " if origin else ""
        log.info("%s: ok from %s (%ssha256 %s)", filename, source, via, digest[:12])
        return dest

    if not failures:
        detail = f"no sources to try: set {ENV_MIRROR} or list mirrors under data.mirrors"
    else:
        detail = "every source failed:\n" + "\n".join(f"  - {s}: {r}" for s, r in failures)
    raise DownloadError(
        f"could not download {filename} (expected sha256 {sha256.lower()} of its decompressed "
        f"bytes); {detail}\nSet {ENV_MIRROR} to a directory or URL that holds the MNIST files, "
        "or check the network and data.mirrors."
    )


def download_all(
    files: Mapping[str, Mapping[str, str]],
    out_dir: str | os.PathLike,
    mirrors: Sequence[str],
    **options: Any,
) -> dict[str, Path]:
    """Download every entry of ``files`` (``key -> {"filename", "sha256"}``, as in the config);
    ``options`` (``env_mirror``, ``timeout``, ``retries``, ``backoff``) as :func:`download_file`.

    Returns ``key -> path``. Stops at the first file that cannot be had (DownloadError).
    """
    paths = {}
    for key, spec in files.items():
        try:
            filename, sha256 = spec["filename"], spec["sha256"]
        except (KeyError, TypeError):
            raise ValueError(f"data.files.{key} needs 'filename' and 'sha256'") from None
        paths[key] = download_file(filename, sha256, out_dir, mirrors, **options)
    return paths
