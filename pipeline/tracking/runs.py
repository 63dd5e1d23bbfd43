"""The life of a run: start it, record into it, and end it honestly.

A run ends FINISHED when its block completes, FAILED when the block raises (tag
``failure_reason``; for :class:`mlp.DivergenceError` also ``diverged_epoch`` and
``diverged_step``), and KILLED on Ctrl-C or SIGTERM (:class:`pipeline.errors.Terminated`). The
exception is re-raised either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mlp
from pipeline.config import Config, to_dict
from pipeline.errors import Terminated
from pipeline.names import CURVES
from pipeline.tracking.provenance import config_yaml, flatten, run_tags
from pipeline.tracking.store import (
    TrackingError,
    check_tracking_server,
    experiment_id,
    is_locked,
    project_root,
    resolve_tracking_uri,
    store_client,
    use_store,
    with_retry,
)

logger = logging.getLogger(__name__)

# MLflow accepts at most 100 params per log_batch call; tag values up to 8000 characters.
_PARAM_BATCH = 100
_MAX_TAG_CHARS = 5000
CONFIG_ARTIFACT = "config.yaml"


class Run:
    """One MLflow run of this project: what stage code records into (it never imports MLflow).

    ``id`` and ``uri`` (the store it lives in) identify it; every write is retried while a
    SQLite store is busy.
    """

    def __init__(self, client: MlflowClient, run_id: str, uri: str):
        self._client = client
        self.id = run_id
        self.uri = uri

    def __repr__(self) -> str:
        return f"Run({self.id!r} in {self.uri})"

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Numbers (booleans as 0/1) at ``step``, in one request."""
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        with_retry(self._client.log_batch, self.id, metrics=batch)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        batch = [RunTag(key, str(value)[:_MAX_TAG_CHARS]) for key, value in tags.items()]
        with_retry(self._client.log_batch, self.id, tags=batch)

    def log_file(self, path: str | os.PathLike, folder: str | None = None) -> None:
        """A local file (or folder) as an artifact, under ``folder``."""
        with_retry(self._client.log_artifact, self.id, os.fspath(path), folder)

    def log_text(self, text: str, name: str) -> None:
        """``text`` as the artifact ``name``."""
        with_retry(self._client.log_text, self.id, text, name)

    def epoch_logger(self, prefix: str = "") -> mlp.Callback:
        """A callback for :meth:`mlp.MLP.fit` that logs each epoch's row as the curves of
        :data:`pipeline.names.CURVES` (``step = epoch``)."""
        return _EpochLogger(self, prefix)


class _EpochLogger(mlp.Callback):
    def __init__(self, run: Run, prefix: str):
        self.run = run
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        row = {
            self.prefix + CURVES.get(key, key): value
            for key, value in logs.items()
            if key != "epoch" and isinstance(value, (int, float))
        }
        self.run.log_metrics(row, step=epoch)


# ---------------------------------------------------------------------------- starting and ending
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
    tags: Mapping[str, object] | None = None,
) -> Iterator[Run]:
    """Start a run for a stage; yields its :class:`Run`, ends it as the block ends.

    ``uri`` goes through :func:`resolve_tracking_uri` (``MLFLOW_TRACKING_URI`` wins); a server
    is checked first (:class:`TrackingUnavailable`). The experiment is created if missing, with
    artifacts beside a SQLite store. The run gets ``config`` flattened as params, the resolved
    config as the artifact ``config.yaml``, and :func:`run_tags` plus ``tags``.
    ``parent_run_id`` makes it a child of a run started anywhere, also in another process.
    """
    resolved = resolve_tracking_uri(uri)
    check_tracking_server(resolved)
    use_store(resolved)
    client = store_client(resolved)
    experiment = experiment_id(client, experiment, resolved)
    plain = dict(config)
    all_tags = run_tags(project_root(), data_digests, stage)
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    active = mlflow.active_run()
    # The parent may be active in this very process (a sweep run without a launcher).
    nested = bool(parent_run_id and active is not None and active.info.run_id == parent_run_id)
    started = with_retry(
        mlflow.start_run,
        experiment_id=experiment,
        run_name=run_name,
        nested=nested,
        parent_run_id=parent_run_id,
        tags=all_tags,
    )
    run = Run(client, started.info.run_id, resolved)
    try:
        params = [Param(k, v) for k, v in flatten(plain).items()]
        for i in range(0, len(params), _PARAM_BATCH):
            with_retry(client.log_batch, run.id, params=params[i : i + _PARAM_BATCH])
        run.log_text(config_yaml(plain), CONFIG_ARTIFACT)
        yield run
    except (KeyboardInterrupt, Terminated) as exc:
        _end_after_error(client, run.id, "KILLED", exc)
        raise
    except SystemExit as exc:
        _end_after_error(client, run.id, "FINISHED" if exc.code in (None, 0) else "FAILED", exc)
        raise
    except BaseException as exc:
        _end_after_error(client, run.id, "FAILED", exc)
        raise
    else:
        _terminate(client, run.id, "FINISHED")


def start_config_run(
    cfg: Config,
    *,
    stage: str,
    run_name: str,
    experiment: str | None = None,
    uri: str | None = None,
    **kwargs: Any,
) -> contextlib.AbstractContextManager[Run]:
    """:func:`start_run` for a validated config: its values as params, in the store and
    experiment of its ``tracking`` section unless ``experiment`` or ``uri`` say otherwise."""
    return start_run(
        to_dict(cfg),
        stage=stage,
        run_name=run_name,
        experiment=experiment or cfg.tracking.experiment,
        uri=uri if uri is not None else cfg.tracking.uri,
        **kwargs,
    )


def existing_run(run_id: str, recorded_uri: str, configured_uri: str | None = None) -> Run | None:
    """The run ``run_id`` of the store ``recorded_uri``, to record more into it, when that store
    is the one in use now (``configured_uri`` resolved); else ``None``."""
    uri = resolve_tracking_uri(configured_uri)
    check_tracking_server(uri)
    if recorded_uri != uri:
        return None
    use_store(uri)
    return Run(store_client(uri), run_id, uri)


def end_unfinished_children(parent: Run, error: BaseException) -> None:
    """Children of ``parent`` still RUNNING when it stops (their process was killed) end as it
    does: KILLED on an interrupt, FAILED otherwise. Never raises."""
    killed = isinstance(error, (KeyboardInterrupt, Terminated))
    try:
        client = parent._client
        experiment = with_retry(client.get_run, parent.id).info.experiment_id
        orphans = with_retry(
            client.search_runs,
            [experiment],
            f"tags.mlflow.parentRunId = '{parent.id}' and attributes.status = 'RUNNING'",
        )
        for orphan in orphans:
            reason = f"the sweep stopped before this point ended ({type(error).__name__})"
            with_retry(client.set_tag, orphan.info.run_id, "failure_reason", reason)
            with_retry(client.set_terminated, orphan.info.run_id, "KILLED" if killed else "FAILED")
    except Exception as exc:
        logger.warning("could not end the unfinished runs of %s: %s", parent.id, exc)


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
            if not is_locked(exc):
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


# ---------------------------------------------------------------------------- reading
def read_run(run_id: str, uri: str | None = None) -> dict[str, Any]:
    """What a finished run recorded: ``status``, ``tags`` and its ``config`` (the artifact
    ``config.yaml``). :class:`TrackingError` when the store does not know the run."""
    resolved = resolve_tracking_uri(uri)
    check_tracking_server(resolved)
    client = store_client(resolved)
    try:
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp))
            config = yaml.safe_load(local.read_text())
    except MlflowException as exc:
        raise TrackingError(f"cannot read run {run_id} in {resolved}: {exc.message}") from None
    return {
        "run_id": run_id,
        "status": run.info.status,
        "tags": dict(run.data.tags),
        "config": config,
    }
