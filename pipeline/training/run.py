"""Train, save and record one configuration: the one run path of every entry point.

The ``train`` stage, every point of a sweep and the TensorFlow baseline call
:func:`train_and_record`; they differ only in the framework, where the outputs go and whether the
test set is scored at once. It removes the outputs of any earlier run first, so a run that fails
or is interrupted leaves nothing that looks like its own; it writes them only once training has
finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlp import Callback
from pipeline import tracking
from pipeline.config import Config
from pipeline.data.dataset import Dataset, load_dataset
from pipeline.files import write_history, write_json
from pipeline.names import CURVES_FILE, HISTORY_FILE, INFO_FILE, METRICS_FILE, RUN_FILE
from pipeline.reporting import plots
from pipeline.training.build import run_name
from pipeline.training.frameworks import NUMPY, Framework
from pipeline.training.results import final_metrics, history_rows, metrics_on_test_set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outputs:
    """Where one run writes: its model, and in ``reports`` its history and metrics, plus on
    request its learning curves (``curves``) and the record of its MLflow run (``run_record``,
    for a later stage to add to it). A framework that describes itself adds ``info.json``."""

    model: Path
    reports: Path
    curves: bool = False
    run_record: bool = False

    @property
    def history(self) -> Path:
        return self.reports / HISTORY_FILE

    @property
    def metrics(self) -> Path:
        return self.reports / METRICS_FILE

    @property
    def curves_png(self) -> Path:
        return self.reports / CURVES_FILE

    @property
    def run_json(self) -> Path:
        return self.reports / RUN_FILE

    @property
    def info(self) -> Path:
        return self.reports / INFO_FILE

    def all(self) -> list[Path]:
        """Every file a run may write here."""
        return [self.model, self.history, self.metrics, self.curves_png, self.run_json, self.info]


@dataclass
class RunResult:
    """A finished run: its MLflow run, what it measured, its history rows and its model."""

    run_id: str
    metrics: dict[str, float]
    rows: list[dict[str, float]]
    model: Any
    files: list[Path] = field(default_factory=list)


def train_and_record(
    cfg: Config,
    data: Dataset | str | Path,
    outputs: Outputs,
    *,
    stage: str,
    framework: Framework = NUMPY,
    score_test_set: bool = False,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    uri: str | None = None,
    tags: Mapping[str, object] | None = None,
    callbacks: Sequence[Callback] = (),
    on_start: Callable[[tracking.Run], object] | None = None,
) -> RunResult:
    """Train ``cfg`` with ``framework`` as one tracked run, save the model and write the reports.

    ``data``: the split, or the path of the preprocessed ``.npz`` (loaded with
    ``data.train_limit``). The run records the config, the dataset digests, the per-epoch curves
    and the metrics (``train_seconds``, the last epoch's ``final_*`` and, with
    ``score_test_set``, the ``test_*`` metrics), and holds the model and the reports as
    artifacts. ``experiment`` and ``uri`` default to ``cfg.tracking``'s; ``on_start`` is called
    with the run as soon as it exists. Raises what training raises (:class:`mlp.DivergenceError`,
    ...), after the run has been ended accordingly.
    """
    for stale in outputs.all():
        stale.unlink(missing_ok=True)
    if not isinstance(data, Dataset):
        data = load_dataset(data, cfg.data.train_limit)
    framework.prepare(cfg)
    name = run_name(cfg) if framework is NUMPY else f"{framework.name} {run_name(cfg)}"
    with tracking.start_config_run(
        cfg,
        stage=stage,
        run_name=name,
        experiment=experiment,
        uri=uri,
        data_digests=data.digests,
        parent_run_id=parent_run_id,
        tags={**framework.tags(cfg), **(tags or {})},
    ) as run:
        if on_start is not None:
            on_start(run)
        log.info(
            "training %s (%s) on %d images (validation %d), %d epochs",
            run_name(cfg),
            framework.name,
            len(data.y_train),
            len(data.y_val),
            cfg.train.epochs,
        )
        model, history = framework.train(cfg, data, [*callbacks, run.epoch_logger()])
        rows = history_rows(history)
        measured = final_metrics(history)
        if score_test_set:
            probs = framework.predict_proba(cfg, model, data.X_test)
            measured.update(metrics_on_test_set(data.y_test, probs))
        run.log_metrics(measured)

        written = [
            framework.save(model, outputs.model),
            write_history(outputs.history, rows),
            write_json(outputs.metrics, measured),
        ]
        if outputs.curves:
            written.append(plots.learning_curves(rows, outputs.curves_png, name))
        info = framework.describe(cfg, model, history)
        if info is not None:
            info.update(mlflow_run_id=run.id, tracking_uri=run.uri)
            written.append(write_json(outputs.info, info))
        run.log_file(outputs.model, "model")
        for path in written[1:]:
            run.log_file(path, "reports")
        if outputs.run_record:
            record = {"run_id": run.id, "tracking_uri": run.uri}
            written.append(write_json(outputs.run_json, record))
    log.info("trained in %.2f s; model written to %s", measured["train_seconds"], outputs.model)
    return RunResult(run.id, measured, rows, model, written)
