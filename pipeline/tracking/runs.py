"""The life of a run: start it, record into it, and end it honestly.

A run ends FINISHED when its block completes, FAILED when the block raises (tag
``failure_reason``; for :class:`mlp.DivergenceError` also ``diverged_epoch`` and
``diverged_step``), and KILLED on Ctrl-C or SIGTERM (:class:`pipeline.errors.Terminated`). The
exception is re-raised either way. A run whose process dies without ending it (``kill -9``) is
ended KILLED by the next command that opens the store (:mod:`pipeline.tracking.reaper`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

import mlp
from pipeline.config import Config, to_dict
from pipeline.errors import Terminated, deferred_signals
from pipeline.names import CURVES, DATASETS, TRAIN_SECONDS
from pipeline.tracking import models
from pipeline.tracking.datasets import DatasetRef, dataset_input
from pipeline.tracking.portable import relocate_artifacts
from pipeline.tracking.provenance import PID_TAG, config_yaml, flatten, knob_params, run_tags
from pipeline.tracking.reaper import STALE_REASON_START, reap_stale_runs
from pipeline.tracking.store import (
    StoreError,
    TrackingError,
    check_store_scheme,
    check_tracking_server,
    experiment_id,
    is_locked,
    project_root,
    resolve_tracking_uri,
    store_client,
    store_failure,
    use_store,
    with_retry,
)

logger = logging.getLogger(__name__)
# MLflow's system metrics monitor says "started", "stopping" and "no GPU" at INFO for every run.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)

# MLflow accepts at most 100 params per log_batch call; tag values up to 8000 characters.
_PARAM_BATCH = 100
_MAX_TAG_CHARS = 5000
CONFIG_ARTIFACT = "config.yaml"
#: Which data a metric is measured on, by the start of its name: a key of DATASETS.
_METRIC_DATA = {"train_": "training", "val_": "validation", "test_": "test"}
#: The experiment's description in the MLflow UI (set when it has none), and its kind: model
#: training, not GenAI (the UI's own tag for it).
EXPERIMENT_NOTE = (
    "Runs of the MNIST MLP pipeline: `train` (+ `evaluate`), `sweep` (a parent per sweep, a child "
    "per point), `baseline`, `compare`."
)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# System metrics of training runs: one sample a second (MLflow's default, 10 s, would record
# nothing for a training that takes a second).
_SYSTEM_METRICS_DEFAULTS = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}


class Run:
    """One MLflow run of this project: what stage code records into (it never imports MLflow).

    ``id`` and ``uri`` (the store it lives in) identify it; every write is retried while a
    SQLite store is busy.
    """

    def __init__(self, client: MlflowClient, run_id: str, uri: str):
        self._client = client
        self.id = run_id
        self.uri = uri
        #: The parameters the run was started with.
        self.params: dict[str, str] = {}
        #: The datasets the run logged, by context (see :meth:`log_datasets`).
        self.datasets: dict[str, DatasetRef] = {}
        # The latest value of each metric this object logged, to link to a model later.
        self._latest: dict[str, Metric] = {}

    def __repr__(self) -> str:
        return f"Run({self.id!r} in {self.uri})"

    def log_metrics(
        self, metrics: Mapping[str, float], step: int = 0, *, model_id: str | None = None
    ) -> None:
        """Numbers (booleans as 0/1) at ``step``, in one request; linked to the logged model
        ``model_id`` when given (and then to the dataset each one is measured on)."""
        now = int(time.time() * 1000)
        batch = [
            self._metric(key, float(value), now, step, model_id) for key, value in metrics.items()
        ]
        with_retry(self._client.log_batch, self.id, metrics=batch)
        self._latest.update((m.key, m) for m in batch)

    def _metric(self, key: str, value: float, when: int, step: int, model_id: str | None) -> Metric:
        data = None
        if model_id is not None:
            context = next((c for p, c in _METRIC_DATA.items() if key.startswith(p)), None)
            data = self.datasets.get(context) if key != TRAIN_SECONDS else None
        return Metric(
            key,
            value,
            when,
            step,
            model_id=model_id,
            dataset_name=data.name if data else None,
            dataset_digest=data.digest if data else None,
        )

    def log_datasets(
        self,
        parts: Mapping[str, tuple[np.ndarray, np.ndarray]],
        *,
        source: str,
        source_digests: Mapping[str, str],
    ) -> dict[str, DatasetRef]:
        """Each part of the split (``{"training": (X, y), ...}``, contexts of
        :data:`pipeline.names.DATASETS`; empty parts are skipped) as a dataset input of the run,
        identified by the SHA-256 of its arrays; ``source``: the file they were read from,
        ``source_digests``: the SHA-256 of the MNIST files (tags)."""
        inputs = []
        for context, (X, y) in parts.items():
            if context not in DATASETS or not len(y):
                continue
            entry, ref = dataset_input(context, X, y, source=source, source_digests=source_digests)
            inputs.append(entry)
            self.datasets[context] = ref
        if inputs:
            _retry_on_duplicate(self._client.log_inputs, self.id, datasets=inputs)
        return dict(self.datasets)

    def log_model(
        self,
        flavor: str,
        *,
        model: Any,
        saved: str | os.PathLike,
        dtype: str,
        input_example: np.ndarray,
        step: int,
        link: Sequence[str] = (),
    ) -> str:
        """The trained ``model`` (written by its framework to ``saved``) as this run's MLflow
        model ``model``, in ``flavor`` (:mod:`pipeline.tracking.models`), an output of the run
        at ``step``, with the run's parameters. The latest values of the metrics ``link`` names
        (as this object logged them) are linked to it. Returns the model's id."""
        model_id = models.log_model(
            self._client,
            self.id,
            flavor,
            model=model,
            saved=Path(saved),
            dtype=dtype,
            input_example=input_example,
            step=step,
            params=self.params,
        )
        again = [self._latest[key] for key in link if key in self._latest]
        if again:  # the same values again, now naming the model: MLflow keeps them once
            batch = [self._metric(m.key, m.value, m.timestamp, m.step, model_id) for m in again]
            with_retry(self._client.log_batch, self.id, metrics=batch)
        return model_id

    def describe(self, text: str) -> None:
        """The run's description in the MLflow UI (Markdown)."""
        self.set_tags({MLFLOW_RUN_NOTE: text})

    def link(self, run_id: str, text: str) -> str:
        """A Markdown link to run ``run_id`` of this run's experiment, for a description."""
        experiment = with_retry(self._client.get_run, self.id).info.experiment_id
        return f"[{text}](#/experiments/{experiment}/runs/{run_id})"

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


def _retry_on_duplicate(fn: Any, *args: Any, tries: int = 3, **kwargs: Any) -> Any:
    """``fn`` through :func:`with_retry`, tried again when it collides with another process
    inserting the same row (MLflow checks, then inserts: two sweep points logging the same
    dataset at once both insert). Its transaction is rolled back, so a retry finds the row."""
    for attempt in range(1, tries + 1):
        try:
            return with_retry(fn, *args, **kwargs)
        except MlflowException as exc:
            text = str(exc)
            duplicate = "UNIQUE constraint failed" in text or "duplicate key value" in text
            if attempt == tries or not duplicate:
                raise
            logger.debug("another process wrote the same row (%s), retry %d", exc, attempt)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


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
    params: Mapping[str, str] | None = None,
    description: str | None = None,
    system_metrics: bool = False,
) -> Iterator[Run]:
    """Start a run for a stage; yields its :class:`Run`, ends it as the block ends.

    ``uri`` goes through :func:`resolve_tracking_uri` (``MLFLOW_TRACKING_URI`` wins); a server
    is checked first (:class:`TrackingUnavailable`), then the store is opened
    (:func:`open_store`). The experiment is created if missing, with artifacts beside a SQLite
    store. The run gets ``params`` (default: all of ``config``, flattened) as parameters, the
    resolved config as the artifact ``config.yaml``, :func:`run_tags` plus ``tags``, and
    ``description``; with ``system_metrics``, MLflow's CPU, memory, disk and network samples.
    ``parent_run_id`` makes it a child of a run started anywhere, also in another process.
    """
    resolved, client = open_store(uri)
    experiment = experiment_id(client, experiment, resolved)
    _describe_experiment(client, experiment)
    plain = dict(config)
    all_tags = run_tags(project_root(), data_digests, stage)
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    if description:
        all_tags[MLFLOW_RUN_NOTE] = description
    active = mlflow.active_run()
    # The parent may be active in this very process (a sweep run without a launcher).
    nested = bool(parent_run_id and active is not None and active.info.run_id == parent_run_id)
    if system_metrics:
        for name, value in _SYSTEM_METRICS_DEFAULTS.items():
            os.environ.setdefault(name, value)
    started = with_retry(
        mlflow.start_run,
        experiment_id=experiment,
        run_name=run_name,
        nested=nested,
        parent_run_id=parent_run_id,
        tags=all_tags,
        log_system_metrics=system_metrics,
    )
    run = Run(client, started.info.run_id, resolved)
    run.params = dict(flatten(plain) if params is None else params)
    try:
        batch = [Param(k, v) for k, v in run.params.items()]
        for i in range(0, len(batch), _PARAM_BATCH):
            with_retry(client.log_batch, run.id, params=batch[i : i + _PARAM_BATCH])
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


def open_store(uri: str | None = None) -> tuple[str, MlflowClient]:
    """The store a command records into: its resolved URI and a client. A server is checked
    first; a SQLite store's artifact locations are brought back beside it when the project was
    moved (:func:`pipeline.tracking.portable.relocate_artifacts`), and runs left RUNNING by a
    dead process of this host end KILLED (:func:`pipeline.tracking.reaper.reap_stale_runs`)."""
    resolved = resolve_tracking_uri(uri)
    check_store_scheme(resolved)
    check_tracking_server(resolved)
    use_store(resolved)
    try:
        client = store_client(resolved)
        relocate_artifacts(resolved)
        reap_stale_runs(client)
    except StoreError:
        raise
    except ImportError as exc:  # a database driver that is not installed
        raise StoreError(
            f"the MLflow store {resolved} needs the Python package {exc.name!r}, which is not "
            "installed: install it into the environment, or use another store"
        ) from None
    except Exception as exc:  # MLflow refuses the store: nothing was started yet
        problem = store_failure(exc)
        if problem is None:
            raise
        raise StoreError(problem.replace(" failed: ", " cannot be used: ", 1)) from None
    return resolved, client


def _describe_experiment(client: MlflowClient, experiment: str) -> None:
    """Give the experiment :data:`EXPERIMENT_NOTE` as its description and
    :data:`EXPERIMENT_KIND` when it has none."""
    try:
        tags = with_retry(client.get_experiment, experiment).tags
        for key, value in ((MLFLOW_RUN_NOTE, EXPERIMENT_NOTE), EXPERIMENT_KIND):
            if key not in tags:
                with_retry(client.set_experiment_tag, experiment, key, value)
    except MlflowException as exc:  # a description is not worth failing a run over
        logger.warning("could not describe the MLflow experiment %s: %s", experiment, exc)


def start_config_run(
    cfg: Config,
    *,
    stage: str,
    run_name: str,
    experiment: str | None = None,
    uri: str | None = None,
    param_keys: Sequence[str] = (),
    **kwargs: Any,
) -> contextlib.AbstractContextManager[Run]:
    """:func:`start_run` for a validated config: its knobs as params
    (:func:`pipeline.tracking.provenance.knob_params`; ``param_keys`` adds keys), in the store
    and experiment of its ``tracking`` section unless ``experiment`` or ``uri`` say otherwise."""
    config = to_dict(cfg)
    return start_run(
        config,
        params=knob_params(config, param_keys),
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
    if recorded_uri != uri:
        return None
    _, client = open_store(uri)
    return Run(client, run_id, uri)


def _children(parent: Run, where: str) -> list:
    """The child runs of ``parent`` that match ``where`` (an MLflow search filter)."""
    client = parent._client
    experiment = with_retry(client.get_run, parent.id).info.experiment_id
    return with_retry(
        client.search_runs, [experiment], f"tags.mlflow.parentRunId = '{parent.id}' and {where}"
    )


def end_unfinished_children(parent: Run, error: BaseException) -> None:
    """Children of ``parent`` still RUNNING when it stops (their process was killed) end as it
    does: KILLED on an interrupt, FAILED otherwise. Never raises."""
    killed = isinstance(error, (KeyboardInterrupt, Terminated))
    try:
        client = parent._client
        orphans = _children(parent, "attributes.status = 'RUNNING'")
        for orphan in orphans:
            reason = f"the sweep stopped before this point ended ({type(error).__name__})"
            with_retry(client.set_tag, orphan.info.run_id, "failure_reason", reason)
            with_retry(client.set_terminated, orphan.info.run_id, "KILLED" if killed else "FAILED")
    except Exception as exc:
        logger.warning("could not end the unfinished runs of %s: %s", parent.id, exc)


def end_dead_children(parent: Run, dead: Mapping[str, str]) -> dict[str, str]:
    """Children of ``parent`` left open by a process that died (``dead``: pid -> why) end
    FAILED with that reason, also when another command's reaper has ended them KILLED in the
    meantime; the others left RUNNING by dead processes of this host end KILLED
    (:func:`~pipeline.tracking.reaper.reap_stale_runs`). Returns pid -> the run it ended.
    Never raises."""
    ended: dict[str, str] = {}
    try:
        client = parent._client
        children = _children(parent, "attributes.status != 'FINISHED'")
        for child in children:
            pid = child.data.tags.get(PID_TAG)
            reaped = child.info.status == "KILLED" and str(
                child.data.tags.get("failure_reason", "")
            ).startswith(STALE_REASON_START)
            if pid in dead and (child.info.status == "RUNNING" or reaped):
                reason = dead[pid][:_MAX_TAG_CHARS]
                with_retry(client.set_tag, child.info.run_id, "failure_reason", reason)
                with_retry(client.set_terminated, child.info.run_id, "FAILED")
                ended[pid] = child.info.run_id
        reap_stale_runs(client)
    except Exception as exc:
        logger.warning("could not end the runs of dead points of %s: %s", parent.id, exc)
    return ended


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
            with deferred_signals():
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
    # When the store itself failed, it will not record the ending either: the command's own
    # error line says so, and the next command that opens the store ends the run KILLED.
    level = logging.DEBUG if store_failure(exc) else logging.WARNING
    try:
        if tags:
            with_retry(client.log_batch, run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    except Exception as err:
        logger.log(level, "could not tag MLflow run %s: %s", run_id, err)
    try:
        _terminate(client, run_id, status)
    except Exception as err:
        logger.log(level, "could not end MLflow run %s as %s: %s", run_id, status, err)


# ---------------------------------------------------------------------------- reading
def read_run(run_id: str, uri: str | None = None) -> dict[str, Any]:
    """What a finished run recorded: ``status``, ``tags`` and its ``config`` (the artifact
    ``config.yaml``). :class:`TrackingError` when the store does not know the run."""
    resolved, client = open_store(uri)
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
