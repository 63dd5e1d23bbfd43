"""Where runs go: the MLflow store of this project, and how to reach it reliably.

The store is the embedded default ``sqlite:///<project root>/mlflow.db`` with artifacts in
``<project root>/mlartifacts``, both absolute, unless ``MLFLOW_TRACKING_URI`` (or
``tracking.uri``) names another one, for example an ``mlflow server``. ``dvc exp run --queue``
and ``--temp`` execute stages in temporary copies of the repository,
``<repo>/.dvc/tmp/exps/tmpXXXX`` and ``<repo>/.dvc/tmp/exps/standalone/tmpXXXX``; a project root
inside such a copy is mapped back to ``<repo>`` so that those runs land in the same store as
every other.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import UsageError, deferred_signals
from pipeline.names import PROJECT_ROOT

logger = logging.getLogger(__name__)

T = TypeVar("T")

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# The layout of DVC's temporary experiment copies (dvc/repo/experiments/utils.py: EXEC_TMP_DIR).
_DVC_EXP_TMP_PARTS = (".dvc", "tmp", "exps")
# Ours unless the user set them: fail within seconds, not after MLflow's default ~4 minutes.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class TrackingUnavailable(UsageError):
    """The configured MLflow tracking server does not answer."""


class TrackingError(UsageError):
    """The store does not have what was asked for (an unknown run, ...)."""


class StoreError(UsageError):
    """The store cannot be used: not an SQLite database, damaged, read-only, not MLflow's."""


#: The store this process records into (set by :func:`store_client`), for error messages.
current_store: str | None = None

_SQLITE_HEADER = b"SQLite format 3\x00"
_MOVE_ASIDE = "move it aside to start a new store, or restore it from a backup"


def check_sqlite_file(path: Path) -> None:
    """Refuse, with one :class:`StoreError` naming ``path``, an SQLite store this process cannot
    use: not a file, not an SQLite database, or not writable (the file or its folder, where
    SQLite writes its journal). A missing file is fine: it becomes a new store."""
    if not path.exists():
        if path.parent.exists() and not os.access(path.parent, os.W_OK | os.X_OK):
            raise StoreError(
                f"the MLflow store {path} cannot be created: its folder is read-only; make it "
                "writable, or set MLFLOW_TRACKING_URI to another store"
            )
        return
    if not path.is_file():
        raise StoreError(f"the MLflow store {path} is not a file: {_MOVE_ASIDE}")
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"the MLflow store {path} cannot be read: {exc.strerror}") from None
    if header and header != _SQLITE_HEADER:
        raise StoreError(
            f"the MLflow store {path} is not an SQLite database (damaged, or another kind of "
            f"file): {_MOVE_ASIDE}"
        )
    for what, where in (("file", path), ("folder", path.parent)):
        if not os.access(where, os.R_OK | os.W_OK):
            raise StoreError(
                f"the MLflow store {path} is read-only (its {what} {where} is not writable): "
                "make it writable, or set MLFLOW_TRACKING_URI to another store"
            )


#: The URI schemes MLflow can track runs and register models in (a database driver may follow
#: a ``+``, as in ``postgresql+psycopg2``).
STORE_SCHEMES = (
    "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc",
    "uc", "file",
)  # fmt: skip


def check_store_scheme(uri: str) -> None:
    """Refuse a tracking URI MLflow cannot use, before any work (it would fail only when the
    model is registered, after the training)."""
    scheme = uri.partition("://")[0].partition("+")[0].lower() if "://" in uri else "file"
    if scheme not in STORE_SCHEMES:
        raise StoreError(
            f"the MLflow store {uri} cannot be used: MLflow does not know the scheme "
            f"{scheme!r} (it knows {', '.join(STORE_SCHEMES)}); set MLFLOW_TRACKING_URI or "
            "tracking.uri to sqlite:///<file> or http(s)://<server>"
        )


def store_failure(exc: BaseException) -> str | None:
    """One line saying that the store failed, when ``exc`` comes from the store or the way to
    it (MLflow, SQLAlchemy, SQLite, HTTP); ``None`` for anything else."""
    roots = {cls.__module__.partition(".")[0] for cls in type(exc).__mro__}
    if not roots & {"mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3"}:
        return None
    orig = getattr(exc, "orig", None)  # SQLAlchemy's: the database driver's own error
    text = str(orig) if orig is not None else getattr(exc, "message", None) or str(exc)
    reason = " ".join(text.split())
    for noise in (" [SQL:", " (Background on this error"):
        reason = reason.partition(noise)[0]
    reason = re.sub(r"^\([\w.]+\) ", "", reason)  # SQLAlchemy's "(sqlite3.DatabaseError) "
    if "Max retries exceeded" in reason or "Connection refused" in reason:
        reason = "the server does not answer (connection refused or timed out)"
    elif len(reason) > 240:
        reason = reason[:240] + "..."
    if "malformed" in reason or "not a database" in reason:
        reason += f": {_MOVE_ASIDE}"
    return f"the MLflow store {current_store or 'in use'} failed: {reason}"


def project_root() -> Path:
    """The repository root: the directory holding ``dvc.yaml`` and ``.dvc/``."""
    return PROJECT_ROOT


def store_root(root: Path | None = None) -> Path:
    """``root`` (default: :func:`project_root`), or the real repository above it when ``root``
    is one of DVC's temporary experiment copies under ``<repo>/.dvc/tmp/exps/``."""
    root = Path(root) if root is not None else project_root()
    root = root.absolute()
    parts = root.parts
    n = len(_DVC_EXP_TMP_PARTS)
    for i in range(len(parts) - n + 1):
        if parts[i : i + n] == _DVC_EXP_TMP_PARTS:
            return Path(*parts[:i])
    return root


def default_tracking_uri(root: Path | None = None) -> str:
    """The embedded store ``sqlite:///<absolute store root>/mlflow.db``."""
    return f"sqlite:///{(store_root(root) / DB_NAME).as_posix()}"


def _absolute_uri(uri: str, root: Path) -> str:
    """Relative SQLite paths and scheme-less paths resolved against ``root``."""
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///") :].partition("?")
        if path and path != ":memory:" and not os.path.isabs(path):
            path = (root / path).as_posix()
        return f"sqlite:///{path}{sep}{query}"
    if "://" not in uri and not uri.startswith("file:"):
        return (root / uri).absolute().as_uri()
    return uri


def resolve_tracking_uri(configured: str | None = None, root: Path | None = None) -> str:
    """The tracking URI to use: ``MLFLOW_TRACKING_URI`` if set, else ``configured``, else
    :func:`default_tracking_uri`. Relative SQLite paths are made absolute against the store root
    (the project root, or the real repository when running in a DVC experiment copy)."""
    base = store_root(root)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if not uri:
        return default_tracking_uri(base)
    return _absolute_uri(str(uri), base)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``<directory of the .db>/mlartifacts`` as a
    ``file://`` URI for a SQLite store; ``None`` (the server's choice) for anything else."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].partition("?")[0]
    if not path or path == ":memory:" or not os.path.isabs(path):
        return None
    return (Path(path).parent / ARTIFACTS_DIR).as_uri()


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def configure_http_client() -> None:
    """Short MLflow HTTP timeouts and retries for this process, unless the user set their own."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """For an ``http(s)`` URI, one quick request to ``<uri>/health``; raise
    :class:`TrackingUnavailable` if the server does not answer. Other URIs pass unchecked.

    Any HTTP answer below 500 counts as reachable (a server behind authentication may refuse
    ``/health`` yet work); connection errors, timeouts and 5xx (a proxy without its server) do not.
    """
    if not _is_http(uri):
        return
    import requests

    configure_http_client()
    url = uri.rstrip("/") + "/health"
    verify: bool | str = True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    elif cert := os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = cert
    try:
        response = requests.get(url, timeout=timeout, verify=verify)
        problem = f"HTTP {response.status_code}" if response.status_code >= 500 else None
    except requests.RequestException as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        raise TrackingUnavailable(
            f"MLflow tracking server at {uri} is not reachable ({problem}): start it, or unset "
            f"MLFLOW_TRACKING_URI to use the embedded store {default_tracking_uri()}"
        )


def is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc).lower()


def with_retry(fn: Callable[..., T], *args: Any, tries: int = 10, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried with jittered exponential backoff (0.05 s doubling up to
    2 s, ~10 s in all) while SQLite reports "database is locked"; other errors pass at once.
    Ctrl-C and SIGTERM wait for each call to return (:func:`pipeline.errors.deferred_signals`),
    never for the back-off between calls."""
    delay = 0.05
    for attempt in range(1, tries + 1):
        try:
            with deferred_signals():  # an interrupt waits for the call (see there)
                return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == tries or not is_locked(exc):
                raise
            logger.debug("MLflow store busy (%s), retry %d/%d", exc, attempt, tries - 1)
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def store_client(uri: str) -> MlflowClient:
    """A client for ``uri``; a new SQLite store is created under a file lock first.

    MLflow creates its tables when a client first opens an empty SQLite file; several processes
    doing that at once (a parallel sweep, concurrent stages) collide. The lock file
    ``<db>.lock`` beside the database makes the first one create them while the others wait.
    """
    global current_store
    current_store = uri
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :].partition("?")[0])
        if path.name and path.name != ":memory:":
            import fcntl

            current_store = str(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            check_sqlite_file(path)
            with open(path.with_name(path.name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    client = MlflowClient(uri)
                    with_retry(client.search_experiments, max_results=1)
                except Exception as exc:
                    problem = store_failure(exc)
                    if problem is None:
                        raise
                    raise StoreError(
                        f"{problem.replace(' failed: ', ' cannot be opened: ')}; {_MOVE_ASIDE}"
                    ) from None
                return client
    return MlflowClient(uri)


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with our artifact location) if missing."""
    experiment = with_retry(client.get_experiment_by_name, name)
    if experiment is None:
        try:
            return with_retry(client.create_experiment, name, artifact_location(uri))
        except MlflowException as exc:  # another process created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise exc from None
    if experiment.lifecycle_stage == "deleted":
        raise UsageError(
            f"the MLflow experiment {name!r} in {uri} is deleted: restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`), remove "
            "it for good (`mlflow gc`), or choose another tracking.experiment"
        )
    return experiment.experiment_id


def use_store(uri: str) -> None:
    """``mlflow.set_tracking_uri`` without its side effect of exporting ``MLFLOW_TRACKING_URI``,
    which would make a later ``resolve_tracking_uri`` in this process take it for the user's."""
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported
