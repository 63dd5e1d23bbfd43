"""Train, save and record one configuration: the one run path of every entry point.

The ``train`` stage, every point of a sweep and the TensorFlow baseline call
:func:`train_and_record`; they differ only in the framework, where the outputs go, whether the
test set is scored at once and whether the model is registered. It removes the outputs of any
earlier run first, so a run that fails or is interrupted leaves nothing that looks like its own;
it writes them only once training has finished.

What MLflow gets from a run: its knobs as parameters, the three parts of the split as datasets,
the per-epoch curves, system metrics, ``train_seconds``, the cores other processes kept busy
meanwhile (``other_processes_cores``), with early stopping ``best_epoch`` and ``stopped_epoch``
(and the ``test_*`` metrics when the test set is scored here), the model as an MLflow model
named ``model`` with the last epoch's curves and the test metrics linked to it, the BLAS threads
of the training as the tag ``blas.threads``, and the reports as artifacts. The last epoch's
numbers stay out of MLflow's metrics (they are the curves' points) but are in ``metrics.json``,
for ``dvc exp show``.
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
from pipeline.data.dataset import Dataset, check_split, load_dataset
from pipeline.files import write_history, write_json
from pipeline.machine import BUSY_CORES, LoadMeter
from pipeline.names import (
    BEST_EPOCH,
    BLAS_THREADS_TAG,
    CURVES,
    CURVES_FILE,
    HISTORY_FILE,
    INFO_FILE,
    METRICS_FILE,
    N_CLASSES,
    N_INPUTS,
    OTHER_LOAD,
    PROCESSED,
    REGISTERED_MODEL,
    RUN_FILE,
    STOPPED_EPOCH,
    TEST_METRICS,
    TRAIN_SECONDS,
)
from pipeline.reporting import plots
from pipeline.training.build import run_name
from pipeline.training.frameworks import NUMPY, Framework
from pipeline.training.results import (
    final_metrics,
    history_rows,
    metrics_on_test_set,
    model_epoch,
)

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
    #: The MLflow model it logged, and its version of ``mnist-mlp`` when it was registered.
    model_id: str | None = None
    model_version: str | None = None


def train_and_record(
    cfg: Config,
    data: Dataset | str | Path,
    outputs: Outputs,
    *,
    stage: str,
    framework: Framework = NUMPY,
    score_test_set: bool = False,
    register: bool = False,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    uri: str | None = None,
    tags: Mapping[str, object] | None = None,
    param_keys: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
    on_start: Callable[[tracking.Run], object] | None = None,
) -> RunResult:
    """Train ``cfg`` with ``framework`` as one tracked run, save the model and write the reports.

    ``data``: the split, or the path of the preprocessed ``.npz`` (loaded with
    ``data.train_limit``). The run records the config's knobs (and the keys ``param_keys`` names)
    as parameters, the datasets, the per-epoch curves, ``train_seconds`` and, with
    ``score_test_set``, the ``test_*`` metrics; the model as the MLflow model ``model`` (in the
    framework's flavor), registered as a new version of ``mnist-mlp`` with ``register``; the
    reports as artifacts. ``experiment`` and ``uri`` default to ``cfg.tracking``'s; ``on_start``
    is called with the run as soon as it exists. Raises what training raises
    (:class:`mlp.DivergenceError`, ...), after the run has been ended accordingly.
    """
    for stale in outputs.all():
        stale.unlink(missing_ok=True)
    source = _display(data if not isinstance(data, Dataset) else PROCESSED)
    if not isinstance(data, Dataset):
        data = load_dataset(data, cfg.data.train_limit)
    check_split(cfg.data, data.split, source)
    framework.prepare(cfg)
    name = run_name(cfg) if framework is NUMPY else f"{framework.name} {run_name(cfg)}"
    framework_tags = framework.tags(cfg)
    with tracking.start_config_run(
        cfg,
        stage=stage,
        run_name=name,
        experiment=experiment,
        uri=uri,
        data_digests=data.digests,
        parent_run_id=parent_run_id,
        tags={**framework_tags, **split_tags(data), **(tags or {})},
        param_keys=param_keys,
        description=describe(cfg, framework, stage, len(data.y_train)),
        system_metrics=True,
    ) as run:
        if on_start is not None:
            on_start(run)
        run.log_datasets(
            {
                "training": (data.X_train, data.y_train),
                "validation": (data.X_val, data.y_val),
                "test": (data.X_test, data.y_test),
            },
            source=source,
            source_digests=data.digests,
        )
        log.info(
            "training %s (%s) on %d images (validation %d), %d epochs",
            run_name(cfg),
            framework.name,
            len(data.y_train),
            len(data.y_val),
            cfg.train.epochs,
        )
        with LoadMeter() as load:
            model, history = framework.train(cfg, data, [*callbacks, run.epoch_logger()])
        rows = history_rows(history)
        measured = final_metrics(history)
        # How much other work the machine did meanwhile: `compare` trusts a speed ratio only
        # between two trainings on a quiet machine.
        measured[OTHER_LOAD] = round(load.other_cores, 3)
        if load.other_cores > BUSY_CORES:
            log.warning(
                "other processes kept %.2f cores busy while this trained: its time says more "
                "about the machine than about the training",
                load.other_cores,
            )
        if score_test_set:
            probs = framework.predict_proba(cfg, model, data.X_test)
            measured.update(metrics_on_test_set(data.y_test, probs))

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
        model_id = run.log_model(
            framework.model_flavor,
            model=model,
            saved=outputs.model,
            dtype=cfg.train.dtype,
            input_example=data.X_train[:2],
            step=len(rows),
            link=[CURVES[key] for key in CURVES if key not in ("epoch", "seconds")],
        )
        run.log_metrics(
            {
                key: measured[key]
                for key in (TRAIN_SECONDS, OTHER_LOAD, BEST_EPOCH, STOPPED_EPOCH, *TEST_METRICS)
                if key in measured
            },
            model_id=model_id,
        )
        for path in written[1:]:
            run.log_file(path, "reports")
        kept = rows[model_epoch(history) - 1]
        version = _register(cfg, run, model_id, kept, name) if register else None
        if outputs.run_record:
            record = {
                "run_id": run.id,
                "tracking_uri": run.uri,
                "model_id": model_id,
                "model_version": version,
                "blas_threads": _int_or_none(framework_tags.get(BLAS_THREADS_TAG)),
            }
            written.append(write_json(outputs.run_json, record))
    log.info("trained in %.2f s; model written to %s", measured["train_seconds"], outputs.model)
    return RunResult(run.id, measured, rows, model, written, model_id, version)


#: The tag with the SHA-256 of the processed split a run trained on (``pipeline.reproduce``
#: compares it with the local ``data/processed``).
SPLIT_TAG = "data.split.sha256"


def split_tags(data: Dataset) -> dict[str, str]:
    """The processed split a run trains on: its digest, and the settings that made it."""
    tags = {SPLIT_TAG: data.split_digest} if data.split_digest else {}
    return {**tags, **{f"data.split.{key}": str(v) for key, v in data.split.items()}}


def describe(cfg: Config, framework: Framework, stage: str, n_train: int) -> str:
    """A run's description: what was trained, how, on what, and by which stage."""
    m, o, t = cfg.model, cfg.optimizer, cfg.train
    sizes = "-".join(map(str, [N_INPUTS, *m.hidden_sizes, N_CLASSES]))
    library = "NumPy MLP" if framework is NUMPY else getattr(framework, "library", framework.name)
    return (
        f"{library} {sizes} ({m.hidden_activation}, {m.output_activation}, {m.loss}), "
        f"{o.name} learning rate {o.learning_rate:g}, {t.epochs} epochs of batches of "
        f"{t.batch_size} on {n_train:,} training images, seed {cfg.seed}; stage `{stage}`."
    )


def _register(cfg: Config, run: tracking.Run, model_id: str, kept: dict, name: str) -> str:
    """Register the run's model as a new version of ``mnist-mlp``, tagged with the validation
    accuracy of the epoch it holds (``evaluate`` adds the test accuracy)."""
    tags: dict[str, object] = {"origin": "train stage"}
    if "val_accuracy" in kept:
        tags["val_top1_accuracy"] = round(float(kept["val_accuracy"]), 6)
    version = tracking.register_model(
        run.uri,
        run.id,
        model_id=model_id,
        tags=tags,
        description=f"Trained by the `train` stage: {name}, {cfg.train.epochs} epochs.",
    )
    log.info("registered as %s version %s", REGISTERED_MODEL, version)
    return version


def _int_or_none(value: object) -> int | None:
    return int(value) if value not in (None, "None") else None


def _display(path: str | Path) -> str:
    """``path`` relative to the working directory when it is below it (as a stage names it)."""
    path = Path(path)
    try:
        return path.absolute().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()
