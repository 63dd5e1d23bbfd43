"""MLflow tracking for the pipeline's stages: where runs go, what each run records.

The store is the embedded default ``sqlite:///<project root>/mlflow.db`` with artifacts in
``<project root>/mlartifacts``, both absolute, unless ``MLFLOW_TRACKING_URI`` names another one
(for example an ``mlflow server``). ``dvc exp run --queue`` and ``--temp`` execute stages in
temporary copies of the repository, ``<repo>/.dvc/tmp/exps/tmpXXXX`` and
``<repo>/.dvc/tmp/exps/standalone/tmpXXXX`` (DVC also sets ``DVC_ROOT`` to ``<repo>`` there); a
project root inside such a copy is mapped back to ``<repo>`` so that those runs land in the same
store as every other.

Typical use in a stage::

    install_sigterm_handler()
    check_tracking_server(resolve_tracking_uri(cfg["tracking"]["uri"]))  # before any work
    with start_run(cfg, stage="train", experiment=cfg["tracking"]["experiment"],
                   uri=cfg["tracking"]["uri"], data_digests=digests):
        model.fit(..., callbacks=[MlflowCallback()])
        log_artifact_file("models/model.npz")

Only this package imports MLflow; :mod:`mlp` knows nothing of it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mlp

logger = logging.getLogger(__name__)

T = TypeVar("T")

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# The layout of DVC's temporary experiment copies (dvc/repo/experiments/utils.py: EXEC_TMP_DIR).
_DVC_EXP_TMP_PARTS = (".dvc", "tmp", "exps")
# MLflow accepts at most 100 params per log_batch call; tag values up to 8000 characters.
_PARAM_BATCH = 100
_MAX_TAG_CHARS = 5000
# Ours unless the user set them: fail within seconds, not after MLflow's default ~4 minutes.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# fit's history keys -> metric names in MLflow.
METRIC_NAMES = {
    "loss": "train_loss",
    "accuracy": "train_accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "seconds": "epoch_seconds",
}


class TrackingUnavailable(RuntimeError):
    """The configured MLflow tracking server does not answer."""


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM (see :func:`install_sigterm_handler`).

    A ``SystemExit`` with code 143 (128 + SIGTERM): uncaught, the process exits quietly with the
    status a shell expects of a terminated process; ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.signum = signum


# ---------------------------------------------------------------------------- where the store is
def project_root() -> Path:
    """The repository root: the directory holding ``dvc.yaml`` and ``.dvc/``."""
    return Path(__file__).resolve().parents[1]


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
    for name, value in _HTTP_DEFAULTS.items():
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


# ---------------------------------------------------------------------------- retries
def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc).lower()


def with_retry(fn: Callable[..., T], *args: Any, tries: int = 10, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried with jittered exponential backoff (0.05 s doubling up to
    2 s, ~10 s in all) while SQLite reports "database is locked"; other errors pass at once."""
    delay = 0.05
    for attempt in range(1, tries + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == tries or not _is_locked(exc):
                raise
            logger.debug("MLflow store busy (%s), retry %d/%d", exc, attempt, tries - 1)
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- what a run records
def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}``. Strings stay as they are; numbers, booleans and
    ``None`` as JSON (``0.1``, ``true``, ``null``); lists as JSON (``[784, 32, 16, 10]``)."""
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=_json_default)
    return flat


def _json_default(value: Any) -> Any:
    """NumPy scalars and arrays as Python values; anything else as its ``str``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def run_tags(root: Path | None, data_digests: Mapping[str, str] | None, stage: str) -> dict:
    """Tags for a run: ``git.commit`` (``"unknown"`` outside a git repository), ``git.dirty``,
    ``data.sha256.<name>`` per dataset file, ``stage``, ``version.<package>`` for the libraries
    that shape results (read from package metadata; nothing is imported), ``platform``, and the
    DVC experiment's name and baseline commit when DVC runs the stage."""
    root = Path(root) if root is not None else project_root()
    head = _git(root, "rev-parse", "HEAD")
    commit = head.strip() if head else "unknown"
    tags: dict[str, str] = {"stage": stage, "git.commit": commit}
    if head:
        tags["mlflow.source.git.commit"] = commit
        status = _git(root, "status", "--porcelain")
        if status is not None:
            tags["git.dirty"] = "true" if status.strip() else "false"
    for name, digest in (data_digests or {}).items():
        tags[f"data.sha256.{name}"] = str(digest)
    tags["version.python"] = platform.python_version()
    versions = {
        "numpy": ("numpy",),
        "mlflow": ("mlflow", "mlflow-skinny"),
        "hydra-core": ("hydra-core",),
        "dvc": ("dvc",),
        "tensorflow": ("tensorflow", "tensorflow-cpu"),
        "keras": ("keras",),
    }
    for key, distributions in versions.items():
        if version := _version(*distributions):
            tags[f"version.{key}"] = version
    tags["platform"] = platform.platform()
    for env, tag in (
        ("DVC_EXP_NAME", "dvc.exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc.baseline_rev"),
    ):
        if value := os.environ.get(env):
            tags[tag] = value
    return tags


def _plain(config: Any) -> dict[str, Any]:
    """A plain dict from a dict or an OmegaConf ``DictConfig`` (interpolations resolved)."""
    if isinstance(config, dict):
        return config
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with the project
        DictConfig = ()  # type: ignore[assignment]
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    return dict(config)


def _config_yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


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


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
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
        raise MlflowException(
            f"the MLflow experiment {name!r} in {uri} is deleted: restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`), remove "
            "it for good (`mlflow gc`), or choose another tracking.experiment"
        )
    return experiment.experiment_id


def _failure_tags(exc: BaseException) -> dict[str, str]:
    reason = f"{type(exc).__name__}: {exc}"
    tags = {"failure_reason": reason[:_MAX_TAG_CHARS]}
    if isinstance(exc, mlp.DivergenceError):
        tags["diverged_epoch"] = str(exc.epoch)
        tags["diverged_step"] = str(exc.step)
    return tags


def _terminate(client: MlflowClient, run_id: str, status: str) -> None:
    """Set the run's final status and take it off this process's stack of active runs."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        try:
            mlflow.end_run(status)
            return
        except Exception as exc:
            # end_run pops the run off the stack before it writes the status.
            if not _is_locked(exc):
                raise
    with_retry(client.set_terminated, run_id, status)


def _end_after_error(client: MlflowClient, run_id: str, status: str, exc: BaseException) -> None:
    """Record how the run ended. Never raises: the run's own error matters more."""
    tags = _failure_tags(exc) if status != "FINISHED" else {}
    try:
        if tags:
            with_retry(client.log_batch, run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    except Exception as err:
        logger.warning("could not tag MLflow run %s: %s", run_id, err)
    try:
        _terminate(client, run_id, status)
    except Exception as err:
        logger.warning("could not end MLflow run %s as %s: %s", run_id, status, err)


def _set_tracking_uri(uri: str) -> None:
    """``mlflow.set_tracking_uri`` without its side effect of exporting ``MLFLOW_TRACKING_URI``,
    which would make a later ``resolve_tracking_uri`` in this process take it for the user's."""
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported


@contextlib.contextmanager
def start_run(
    config: Mapping[str, Any],
    *,
    stage: str,
    run_name: str | None = None,
    experiment: str,
    uri: str | None = None,
    data_digests: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run for a stage; yields the active run.

    ``uri`` goes through :func:`resolve_tracking_uri` (``MLFLOW_TRACKING_URI`` wins); a server
    is checked first (:class:`TrackingUnavailable`). The experiment is created if missing, with
    artifacts beside a SQLite store. The run gets ``config`` flattened as params, the resolved
    config as the artifact ``config.yaml``, and :func:`run_tags` plus ``tags``.
    ``parent_run_id`` makes it a child of a run started anywhere, also in another process
    (tag ``mlflow.parentRunId``); ``nested`` of this process's active run.

    The run ends FINISHED, FAILED on an exception (tag ``failure_reason``; for
    :class:`mlp.DivergenceError` also ``diverged_epoch`` and ``diverged_step``), or KILLED on
    KeyboardInterrupt or :class:`Terminated` (SIGTERM, after :func:`install_sigterm_handler`).
    The exception is re-raised.
    """
    resolved = resolve_tracking_uri(uri)
    check_tracking_server(resolved)
    _set_tracking_uri(resolved)
    client = store_client(resolved)
    experiment_id = _experiment_id(client, experiment, resolved)
    plain = _plain(config)
    all_tags = run_tags(project_root(), data_digests, stage)
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    active = mlflow.active_run()
    if parent_run_id and active is not None and active.info.run_id == parent_run_id:
        nested = True  # the parent is active in this very process (e.g. a sequential sweep)
    run = with_retry(
        mlflow.start_run,
        experiment_id=experiment_id,
        run_name=run_name,
        nested=nested,
        parent_run_id=parent_run_id,
        tags=all_tags,
    )
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in flatten(plain).items()]
        for i in range(0, len(params), _PARAM_BATCH):
            with_retry(client.log_batch, run_id, params=params[i : i + _PARAM_BATCH])
        with_retry(client.log_text, run_id, _config_yaml(plain), "config.yaml")
        yield run
    except (KeyboardInterrupt, Terminated) as exc:
        _end_after_error(client, run_id, "KILLED", exc)
        raise
    except SystemExit as exc:
        _end_after_error(client, run_id, "FINISHED" if exc.code in (None, 0) else "FAILED", exc)
        raise
    except BaseException as exc:
        _end_after_error(client, run_id, "FAILED", exc)
        raise
    else:
        _terminate(client, run_id, "FINISHED")


def install_sigterm_handler() -> bool:
    """Turn SIGTERM into a :class:`Terminated` exception in the main thread, so that
    :func:`start_run` records the run as KILLED. Returns False (and does nothing) when not called
    from the main thread, where Python cannot install signal handlers."""

    def _raise(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:
        return False
    return True


def log_artifact_file(
    path: str | os.PathLike, artifact_path: str | None = None, *, run_id: str | None = None
) -> None:
    """Log one local file (or directory) to the active run, or to ``run_id``."""
    if run_id is None:
        with_retry(mlflow.log_artifact, os.fspath(path), artifact_path)
    else:
        with_retry(MlflowClient().log_artifact, run_id, os.fspath(path), artifact_path)


# ---------------------------------------------------------------------------- per-epoch metrics
class MlflowCallback(mlp.Callback):
    """Log each epoch's row of :meth:`mlp.MLP.fit`'s history, ``step = epoch``, in one call.

    Names: ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``epoch_seconds``
    (other numeric keys as they are), each with ``prefix`` in front. The run is ``run_id`` or the
    active run when training begins.
    """

    def __init__(self, run_id: str | None = None, prefix: str = ""):
        self.run_id = run_id
        self.prefix = prefix
        self._client: MlflowClient | None = None

    def on_train_begin(self, model: Any, info: dict[str, int]) -> None:
        if self.run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise RuntimeError("MlflowCallback needs a run_id or an active MLflow run")
            self.run_id = active.info.run_id
        self._client = MlflowClient()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        assert self._client is not None and self.run_id is not None
        timestamp = int(time.time() * 1000)
        metrics = [
            Metric(self.prefix + METRIC_NAMES.get(key, key), float(value), timestamp, epoch)
            for key, value in logs.items()
            if key != "epoch" and isinstance(value, (int, float))
        ]
        with_retry(self._client.log_batch, self.run_id, metrics=metrics)


__all__ = [
    "METRIC_NAMES",
    "MlflowCallback",
    "Terminated",
    "TrackingUnavailable",
    "artifact_location",
    "check_tracking_server",
    "configure_http_client",
    "default_tracking_uri",
    "flatten",
    "install_sigterm_handler",
    "log_artifact_file",
    "project_root",
    "resolve_tracking_uri",
    "run_tags",
    "start_run",
    "store_root",
    "with_retry",
]
