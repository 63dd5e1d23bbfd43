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
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :].partition("?")[0])
        if path.name and path.name != ":memory:":
            import fcntl

            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(path.name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                client = MlflowClient(uri)
                with_retry(client.search_experiments, max_results=1)
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
