"""Models in MLflow: every trained network as an MLflow model, and the model registry.

A training run logs its network under the name ``model`` (:data:`pipeline.names.MODEL_ARTIFACT`)
as an MLflow 3 logged model: its source run is the training run, its parameters the run's, and
the metrics linked to it are the last epoch's curves and the test metrics (:meth:`Run.log_model
<pipeline.tracking.runs.Run.log_model>`). Two flavors, chosen by the framework that trained it:

- ``mlp``: the NumPy :class:`mlp.MLP` as a pyfunc model. The code MLflow stores with it is
  :mod:`pipeline.tracking.mlp_pyfunc` ("models from code": nothing is pickled) plus a copy of the
  ``mlp`` package, and the weights are the ``.npz`` the run saved, so it loads and serves with
  MLflow and NumPy only;
- ``keras``: MLflow's Keras flavor (also a pyfunc model).

Both take float32 pixels in [0, 1], ``(n, 784)``, and return class probabilities ``(n, 10)``
(:func:`signature`), carry an input example and pinned requirements. Then
``mlflow.pyfunc.load_model("runs:/<run id>/model")``, ``("models:/<model id>")`` or
``("models:/mnist-mlp@champion")`` give the same probabilities as :meth:`mlp.MLP.forward`.

The registry: :func:`register_model` adds a version to the registered model ``mnist-mlp``,
:func:`tag_model_version` tags it; :func:`champion` and :func:`set_champion` read and move its
alias ``champion``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_MODEL_VERSIONS,
    MLFLOW_RUN_NOTE,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

import mlp
from pipeline.errors import deferred_signals
from pipeline.names import CHAMPION, MODEL_ARTIFACT, N_CLASSES, N_INPUTS, REGISTERED_MODEL
from pipeline.tracking.store import TrackingError, store_client, use_store, with_retry

log = logging.getLogger(__name__)

#: The flavors a framework can ask for (``Framework.model_flavor``).
MLP_FLAVOR, KERAS_FLAVOR = "mlp", "keras"
#: The code MLflow runs to load a NumPy MLP, and the name of its weights among the artifacts
#: (``mlp_pyfunc.WEIGHTS``; that module cannot be imported here: it registers itself on import).
PYFUNC_CODE = Path(__file__).with_name("mlp_pyfunc.py")
WEIGHTS = "weights"
#: Tags of the source run a logged model shows too ("Logged from", "Created by", its
#: description).
_FROM_RUN = (
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_GIT_COMMIT,
    MLFLOW_USER,
    MLFLOW_RUN_NOTE,
)
#: Installed distributions a model needs, by flavor: pinned to the versions installed here.
#: The registered model's description in the MLflow UI.
REGISTRY_NOTE = (
    "The NumPy MLP on MNIST. Every run of the `train` stage registers a version (tags: its "
    "validation and, once evaluated, test accuracy); the alias `champion` names the best model "
    "a sweep has found, chosen on validation accuracy: `mlflow models serve -m "
    "models:/mnist-mlp@champion` (`make serve`)."
)
REQUIREMENTS = {
    MLP_FLAVOR: (("mlflow",), ("numpy",)),
    KERAS_FLAVOR: (("mlflow",), ("numpy",), ("keras",), ("tensorflow-cpu", "tensorflow")),
}


def signature(dtype: str = "float32") -> ModelSignature:
    """784 float32 pixels in [0, 1] per image in; 10 class probabilities (of the model's
    ``dtype``) out."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, N_INPUTS))]),
        outputs=Schema([TensorSpec(np.dtype(dtype), (-1, N_CLASSES))]),
    )


def requirements(flavor: str) -> list[str]:
    """``name==version`` of each distribution :data:`REQUIREMENTS` lists for ``flavor``."""
    pinned = []
    for alternatives in REQUIREMENTS[flavor]:
        for name in alternatives:
            try:
                pinned.append(f"{name}=={importlib.metadata.version(name)}")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return pinned


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """No progress bars or INFO lines from MLflow while it writes and checks a model (it loads
    the model back to run the input example): a stage's output stays its own."""
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    pyfunc_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        pyfunc_log.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def _save_mlp(path: Path, weights: Path, mlflow_model: Model, dtype: str, example: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "mlp"
        shutil.copytree(
            Path(mlp.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
        )
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(PYFUNC_CODE),
            artifacts={WEIGHTS: str(weights)},
            code_paths=[str(package)],
            signature=signature(dtype),
            input_example=example,
            pip_requirements=requirements(MLP_FLAVOR),
            mlflow_model=mlflow_model,
        )


def _save_keras(path: Path, model: Any, mlflow_model: Model, dtype: str, example: Any) -> None:
    import mlflow.keras

    mlflow.keras.save_model(
        model,
        str(path),
        signature=signature(dtype),
        input_example=example,
        pip_requirements=requirements(KERAS_FLAVOR),
        mlflow_model=mlflow_model,
    )


def log_model(
    client: MlflowClient,
    run_id: str,
    flavor: str,
    *,
    model: Any,
    saved: Path,
    dtype: str,
    input_example: np.ndarray,
    step: int,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log ``model`` (written by its framework to ``saved``) as the logged model ``model`` of
    run ``run_id``, an output of the run at ``step``; returns its model id.

    Each write is retried while the store is busy; a model that could not be written is marked
    FAILED and the error raised.
    """
    if flavor not in REQUIREMENTS:
        raise ValueError(f"unknown model flavor {flavor!r}: one of {sorted(REQUIREMENTS)}")
    run = with_retry(client.get_run, run_id)
    inherited = {k: v for k, v in run.data.tags.items() if k in _FROM_RUN}
    logged = with_retry(
        client.create_logged_model,
        run.info.experiment_id,
        name=MODEL_ARTIFACT,
        source_run_id=run_id,
        params=dict(params or {}),
        tags={**inherited, **(tags or {})},
        model_type=flavor,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MODEL_ARTIFACT
            local.mkdir()  # the Keras flavor writes the input example before it makes the folder
            description = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            )
            with _quietly(), deferred_signals():  # MLflow's own locks (see there)
                if flavor == MLP_FLAVOR:
                    _save_mlp(local, Path(saved), description, dtype, input_example)
                else:
                    _save_keras(local, model, description, dtype, input_example)
            with_retry(client.log_model_artifacts, logged.model_id, str(local))
        with_retry(client.finalize_logged_model, logged.model_id, LoggedModelStatus.READY)
        output = LoggedModelOutput(logged.model_id, step=step)
        with_retry(client.log_outputs, run_id, [output])
    except BaseException:
        try:
            with deferred_signals():
                client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        except Exception as exc:
            log.warning("could not mark the model %s FAILED: %s", logged.model_id, exc)
        raise
    return logged.model_id


def model_of_run(client: MlflowClient, run_id: str) -> str | None:
    """The id of the model ``model`` that run ``run_id`` logged (``None``: none is READY)."""
    run = with_retry(client.get_run, run_id)
    found = with_retry(
        client.search_logged_models,
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_ARTIFACT}'",
    )
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return ready[-1].model_id if ready else None


# ---------------------------------------------------------------------------- the registry
# ``uri``: a resolved tracking URI, such as ``Run.uri``; the registry is the tracking store's.
def register_model(
    uri: str,
    run_id: str,
    *,
    model_id: str | None = None,
    name: str = REGISTERED_MODEL,
    tags: Mapping[str, object] | None = None,
    description: str | None = None,
) -> str:
    """Register the model ``model`` of run ``run_id`` (or the logged model ``model_id``) as a new
    version of ``name``, created when missing; returns the version number. Besides ``tags``,
    the version gets ``validation_data``: the digest of the validation set the run logged, so
    that validation accuracies are compared only on the same data.
    :class:`~pipeline.tracking.store.TrackingError` when the run logged no model."""
    use_store(uri)  # MLflow resolves the version's source through the global tracking URI
    client = store_client(uri)
    model_id = model_id or model_of_run(client, run_id)
    if model_id is None:
        raise TrackingError(f"run {run_id} in {uri} has no model {MODEL_ARTIFACT!r} to register")
    tags = {**(tags or {})}
    for entry in with_retry(client.get_run, run_id).inputs.dataset_inputs:
        if any(t.key == MLFLOW_DATASET_CONTEXT and t.value == "validation" for t in entry.tags):
            tags.setdefault("validation_data", entry.dataset.digest)
    try:
        with_retry(client.create_registered_model, name, description=REGISTRY_NOTE)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = with_retry(
        client.create_model_version,
        name,
        source=f"models:/{model_id}",
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        description=description,
        model_id=model_id,
    )
    # What the UI shows as the logged model's versions (as mlflow.register_model records it).
    versions = json.loads(
        with_retry(client.get_logged_model, model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]"
    )
    versions.append({"name": name, "version": version.version})
    with_retry(
        client.set_logged_model_tags, model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)}
    )
    return str(version.version)


def require_model(uri: str, model_uri: str) -> str:
    """Check that the registry of ``uri`` has the model ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>`` names (other URIs pass); returns what it is, e.g.
    ``"mnist-mlp version 3"``. :class:`~pipeline.tracking.store.TrackingError` when it is not
    there, saying how to make it."""
    if not model_uri.startswith("models:/") or model_uri.startswith("models:/m-"):
        return model_uri
    name, at, alias = model_uri.removeprefix("models:/").partition("@")
    client = store_client(uri)
    try:
        if at:
            version = with_retry(client.get_model_version_by_alias, name, alias)
        else:
            name, _, number = name.partition("/")
            version = with_retry(client.get_model_version, name, number)
    except MlflowException:
        how = (
            "run a sweep first (`dvc repro sweep`, `make sweep` or `python -m pipeline.sweep "
            "--multirun ...`): it names its best model champion"
            if at and alias == CHAMPION
            else "see the registered models in `make ui`"
        )
        raise TrackingError(f"{model_uri} is not in the model registry of {uri}: {how}") from None
    return f"{name} version {version.version}"


def tag_model_version(
    uri: str, version: str, tags: Mapping[str, object], name: str = REGISTERED_MODEL
) -> None:
    """Add ``tags`` to version ``version`` of ``name``."""
    client = store_client(uri)
    for key, value in tags.items():
        with_retry(client.set_model_version_tag, name, version, key, str(value))


def model_version_tags(uri: str, version: str, name: str = REGISTERED_MODEL) -> dict[str, str]:
    """The tags of version ``version`` of ``name``."""
    return dict(with_retry(store_client(uri).get_model_version, name, version).tags)


def champion(
    uri: str, name: str = REGISTERED_MODEL, alias: str = CHAMPION
) -> tuple[str, dict[str, str]] | None:
    """The version ``name@alias`` names and its tags; ``None`` when there is none."""
    client = store_client(uri)
    try:
        version = with_retry(client.get_model_version_by_alias, name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return str(version.version), dict(version.tags)


def set_champion(
    uri: str, version: str, name: str = REGISTERED_MODEL, alias: str = CHAMPION
) -> None:
    """Point the alias ``alias`` of ``name`` at ``version``."""
    with_retry(store_client(uri).set_registered_model_alias, name, alias, version)
