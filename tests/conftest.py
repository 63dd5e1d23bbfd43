"""Fixtures every test module may use. Helpers that are not fixtures live in ``tests/helpers/``.

- ``empty_store``: an MLflow SQLite store with its tables, made once (that takes seconds);
- ``store_uri``: a fresh copy of it for one test;
- ``project``: a working directory with a tiny preprocessed split and its own store;
- ``server``: a real ``mlflow server`` on 127.0.0.1 for the session;
- ``clean_mlflow_state``: no MLflow settings come in from outside or stay behind.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from helpers.data import write_split
from helpers.mlflow_server import MLFLOW, mlflow_server


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables: creating them takes seconds, copying it none."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store_uri(tmp_path, empty_store) -> str:
    """A fresh store of the test's own (a copy of :func:`empty_store`)."""
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(empty_store, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path, monkeypatch, empty_store) -> Path:
    """The working directory of a test: a tiny preprocessed split in ``data/processed/`` (one
    bright pixel per class; 400 training, 100 validation and 200 test images), an empty
    ``mlflow.db``, and no ``MLFLOW_*`` settings from outside."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    write_split(tmp_path / "data/processed")
    return tmp_path


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real tracking server on a free local port with its own SQLite file and artifacts."""
    if not MLFLOW.exists():
        pytest.skip(f"no mlflow executable beside {sys.executable}")
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as running:
        yield running


@pytest.fixture
def clean_mlflow_state():
    """No tracking URI from outside, and none left behind (mlflow.set_tracking_uri sets the
    environment variable); no active run left behind."""
    import mlflow

    from pipeline.tracking.store import HTTP_DEFAULTS

    keys = ("MLFLOW_TRACKING_URI", *HTTP_DEFAULTS)
    saved = {key: os.environ.pop(key, None) for key in keys}
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    for key, value in saved.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value
