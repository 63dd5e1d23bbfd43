"""Runs whose process died without ending them end KILLED, not RUNNING forever.

Every run records the process that runs it: tags ``host``, ``pid`` and ``process.started``
(:func:`pipeline.tracking.provenance.process_tags`). A process killed with ``kill -9``, a machine
that lost power or a tracking server that went away leaves its run RUNNING. When a command of
this project opens the store, :func:`reap_stale_runs` ends every RUNNING run of this host whose
process is gone (no process with that id, or one started at another time: the id was reused) as
KILLED, with a ``failure_reason``, and a model it was still writing (PENDING) as FAILED. Runs of
other hosts are left alone: nothing here can tell whether their process lives; so are processes
this user may not look at.
"""

from __future__ import annotations

import datetime
import logging
import socket

from mlflow.entities import LoggedModelStatus, ViewType
from mlflow.tracking import MlflowClient

from pipeline.tracking.provenance import HOST_TAG, PID_TAG, STARTED_TAG
from pipeline.tracking.store import with_retry

log = logging.getLogger(__name__)

#: How the ``failure_reason`` of a run this module ended begins.
STALE_REASON_START = "its process (pid"

#: How far (seconds) a recorded process start time may be from the live process's.
_START_TOLERANCE = 1.0


def process_alive(pid: int, started: float | None) -> bool:
    """Whether the process ``pid`` runs, and is the one that started at ``started`` (seconds
    since the epoch; ``None``: any process with that id counts)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) <= _START_TOLERANCE
    except psutil.AccessDenied:  # there, but not ours to look at: not ours to end either
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False


def stale_reason(tags: dict[str, str], host: str) -> str | None:
    """Why a RUNNING run with ``tags`` is stale on ``host``, or ``None`` when it is not (its
    process lives, it runs elsewhere, or it does not say which process runs it)."""
    if tags.get(HOST_TAG) != host:
        return None
    try:
        pid = int(tags[PID_TAG])
        started = (
            datetime.datetime.fromisoformat(tags[STARTED_TAG]).timestamp()
            if STARTED_TAG in tags
            else None
        )
    except (KeyError, ValueError):
        return None
    if process_alive(pid, started):
        return None
    return (
        f"{STALE_REASON_START} {pid} on {host}) ended without ending the run: killed, or the "
        "machine or the tracking server went away"
    )


def _fail_unfinished_models(client: MlflowClient, experiment: str, run_id: str) -> None:
    """A model the dead process was still writing stays PENDING: mark it FAILED."""
    models = with_retry(
        client.search_logged_models,
        experiment_ids=[experiment],
        filter_string=f"source_run_id = '{run_id}'",
    )
    for model in models:
        if model.status == LoggedModelStatus.PENDING:
            with_retry(client.finalize_logged_model, model.model_id, LoggedModelStatus.FAILED)


def reap_stale_runs(client: MlflowClient) -> list[str]:
    """End every stale RUNNING run of this host in the store as KILLED, with a
    ``failure_reason``; returns their ids. Never raises: a command must not fail over this."""
    host = socket.gethostname()
    reaped = []
    try:
        experiments = with_retry(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)
        ids = [e.experiment_id for e in experiments]
        running = (
            with_retry(
                client.search_runs,
                ids,
                f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'",
                max_results=1000,
            )
            if ids
            else []
        )
        for run in running:
            reason = stale_reason(dict(run.data.tags), host)
            if reason is None:
                continue
            with_retry(client.set_tag, run.info.run_id, "failure_reason", reason)
            with_retry(client.set_terminated, run.info.run_id, "KILLED")
            _fail_unfinished_models(client, run.info.experiment_id, run.info.run_id)
            reaped.append(run.info.run_id)
            log.warning(
                "MLflow run %s was left RUNNING: %s; ended it as KILLED", run.info.run_id, reason
            )
    except Exception as exc:
        log.warning("could not look for MLflow runs left RUNNING: %s", exc)
    return reaped
