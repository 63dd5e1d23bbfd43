"""MLflow, behind a small API of the pipeline's own: nothing else in the project imports MLflow.

- where the store is (:mod:`pipeline.tracking.store`): :func:`resolve_tracking_uri`,
  :func:`check_tracking_server`, :class:`TrackingUnavailable`; opening it (:func:`open_store`)
  also moves a copied project's artifact locations back beside its store
  (:mod:`pipeline.tracking.portable`) and ends runs whose process died
  (:mod:`pipeline.tracking.reaper`);
- the life of a run (:mod:`pipeline.tracking.runs`): :func:`start_run` (or, for a validated
  config, :func:`start_config_run`) yields a :class:`Run` to record metrics, tags, files,
  per-epoch curves, datasets and the trained model into, and ends it FINISHED, FAILED or KILLED;
  :func:`existing_run` reopens one to add to it; :func:`read_run` reads what one recorded;
- what a run records about its origin (:mod:`pipeline.tracking.provenance`);
- models and the registry (:mod:`pipeline.tracking.models`): :func:`register_model`,
  :func:`tag_model_version`, :func:`model_version_tags`, :func:`champion`, :func:`set_champion`,
  :func:`require_model`.

Typical use in a stage::

    with tracking.start_config_run(cfg, stage="train", run_name=...) as run:
        run.log_datasets({"training": (X, y), ...}, source=..., source_digests=...)
        net.fit(..., callbacks=[run.epoch_logger()])
        model_id = run.log_model("mlp", model=net, saved="models/model.npz", ...)
        run.log_metrics({"train_seconds": 1.2}, model_id=model_id)
"""

from pipeline.tracking.models import (
    KERAS_FLAVOR,
    MLP_FLAVOR,
    champion,
    model_version_tags,
    register_model,
    require_model,
    set_champion,
    tag_model_version,
)
from pipeline.tracking.runs import (
    Run,
    end_dead_children,
    end_unfinished_children,
    existing_run,
    open_store,
    read_run,
    start_config_run,
    start_run,
)
from pipeline.tracking.store import (
    TrackingError,
    TrackingUnavailable,
    check_tracking_server,
    default_tracking_uri,
    resolve_tracking_uri,
)

__all__ = [
    "KERAS_FLAVOR",
    "MLP_FLAVOR",
    "Run",
    "TrackingError",
    "TrackingUnavailable",
    "champion",
    "check_tracking_server",
    "default_tracking_uri",
    "end_dead_children",
    "end_unfinished_children",
    "existing_run",
    "model_version_tags",
    "open_store",
    "read_run",
    "register_model",
    "require_model",
    "resolve_tracking_uri",
    "set_champion",
    "start_config_run",
    "start_run",
    "tag_model_version",
]
