"""MLflow, behind a small API of the pipeline's own: nothing else in the project imports MLflow.

- where the store is (:mod:`pipeline.tracking.store`): :func:`resolve_tracking_uri`,
  :func:`check_tracking_server`, :class:`TrackingUnavailable`;
- the life of a run (:mod:`pipeline.tracking.runs`): :func:`start_run` (or, for a validated
  config, :func:`start_config_run`) yields a :class:`Run` to
  record metrics, tags, files and per-epoch curves into, and ends it FINISHED, FAILED or KILLED;
  :func:`existing_run` reopens one to add to it; :func:`read_run` reads what one recorded;
- what a run records about its origin (:mod:`pipeline.tracking.provenance`).

Typical use in a stage::

    with tracking.start_run(config, stage="train", experiment=..., uri=...) as run:
        net.fit(..., callbacks=[run.epoch_logger()])
        run.log_metrics({"train_seconds": 1.2})
        run.log_file("models/model.npz", "model")
"""

from pipeline.tracking.runs import (
    Run,
    end_unfinished_children,
    existing_run,
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
    "Run",
    "TrackingError",
    "TrackingUnavailable",
    "check_tracking_server",
    "default_tracking_uri",
    "end_unfinished_children",
    "existing_run",
    "read_run",
    "resolve_tracking_uri",
    "start_config_run",
    "start_run",
]
