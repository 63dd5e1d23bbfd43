"""A tracking store that cannot be used is one ``error:`` line naming it: a damaged or foreign
``mlflow.db``, a read-only one, a tracking server that dies in the middle of a run. Nothing is
trained against a store that cannot be opened, and a run whose store failed leaves no outputs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from helpers.data import write_split
from helpers.mlflow_server import mlflow_server
from helpers.project import command_env, train_command, wait_for_an_epoch, write_params


def _train(folder, uri) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_command(folder),
        env=command_env(uri, HOME=str(folder)),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_error_line(stderr: str, *needles: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    # Nothing else of note: MLflow's own INFO lines aside, no SQL, no stack.
    assert "[SQL:" not in stderr and "sqlalche.me" not in stderr, stderr
    return errors[0]


def _no_outputs(folder) -> None:
    assert not (folder / "models/model.npz").exists()
    assert not [p for p in folder.glob("reports/**/*") if p.is_file()]


@pytest.fixture
def small_project(tmp_path):
    write_split(tmp_path / "data")
    write_params(tmp_path, "train.epochs=1")
    return tmp_path


def _damaged_copy(store_uri, folder, how: str):
    source = store_uri[len("sqlite:///") :]
    db = folder / "mlflow.db"
    raw = open(source, "rb").read()
    if how == "random bytes":
        db.write_bytes(os.urandom(8192))
    elif how == "text file":
        db.write_text("this is not a database\n")
    elif how == "truncated":
        db.write_bytes(raw[: len(raw) // 2])
    elif how == "pages overwritten":
        damaged = bytearray(raw)
        damaged[4096 : 4096 * 8] = b"\x55" * (4096 * 7)
        db.write_bytes(bytes(damaged))
    elif how == "a directory":
        db.mkdir()
    return db


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("random bytes", "is not an SQLite database"),
        ("text file", "is not an SQLite database"),
        ("truncated", "cannot be opened: database disk image is malformed"),
        ("pages overwritten", "database disk image is malformed"),
        ("a directory", "is not a file"),
    ],
)
def test_a_damaged_sqlite_store_is_one_line_naming_it_before_any_training(
    small_project, store_uri, how, message
):
    db = _damaged_copy(store_uri, small_project, how)
    result = _train(small_project, f"sqlite:///{db}")
    # Damage in pages that opening the store does not read is found when they are read: the
    # run then stops with the same line (exit 1), and leaves no outputs either.
    assert result.returncode in ((1, 2) if how == "pages overwritten" else (2,)), result.stderr
    line = _one_error_line(result.stderr, f"the MLflow store {db} ", message)
    assert "move it aside" in line
    _no_outputs(small_project)


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="POSIX permissions")
def test_a_read_only_store_is_one_line_naming_it_before_any_training(small_project, store_uri):
    db = small_project / "mlflow.db"
    shutil.copy(store_uri[len("sqlite:///") :], db)
    db.chmod(0o444)
    command = train_command(small_project)
    if os.geteuid() == 0:  # root writes to read-only files unless it drops that capability
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and no setpriv to drop CAP_DAC_OVERRIDE")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    result = subprocess.run(
        command,
        env=command_env(f"sqlite:///{db}", HOME=str(small_project)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    _one_error_line(result.stderr, f"the MLflow store {db} is read-only", "make it writable")
    _no_outputs(small_project)


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_run_is_one_line_and_leaves_no_outputs(tmp_path):
    write_split(tmp_path / "data", n_train=5000)
    write_params(tmp_path, "train.epochs=500", "train.batch_size=8")
    (tmp_path / "server-side").mkdir()
    with mlflow_server(tmp_path / "server-side") as server:
        env = command_env(server["url"], HOME=str(tmp_path))
        process = subprocess.Popen(
            train_command(tmp_path),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_an_epoch(process, server["url"])
            os.killpg(server["process"].pid, signal.SIGKILL)  # the server dies, no goodbye
            _, stderr = process.communicate(timeout=240)
        finally:
            process.kill()
    assert process.returncode == 1, stderr
    _one_error_line(
        stderr, f"the MLflow store {server['url']} failed", "does not answer", "run the command"
    )
    _no_outputs(tmp_path)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://example.org/store", "MLflow does not know the scheme 'ftp'"),
        ("file:///{tmp}/mlruns", "cannot be used: The filesystem tracking backend"),
        ("postgresql+nosuchdriver://u@127.0.0.1:1/db", "cannot be used"),
    ],
)
def test_a_store_mlflow_cannot_use_is_one_line_before_any_training(small_project, uri, message):
    uri = uri.format(tmp=small_project)
    result = _train(small_project, uri)
    assert result.returncode == 2, result.stderr
    _one_error_line(result.stderr, "the MLflow store ", message)
    _no_outputs(small_project)


def test_store_failure_recognises_store_errors_only():
    import sqlite3

    from mlflow.exceptions import MlflowException

    from pipeline.tracking.store import store_failure

    assert store_failure(ValueError("x")) is None
    assert store_failure(KeyError("x")) is None
    line = store_failure(sqlite3.OperationalError("attempt to write a readonly database"))
    assert line is not None and line.endswith("failed: attempt to write a readonly database")
    long = store_failure(MlflowException("API request failed: Max retries exceeded " + "x" * 500))
    assert long is not None and "does not answer" in long and "\n" not in long


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="uses Linux process and permission semantics")
