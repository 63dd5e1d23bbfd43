"""Shared fixtures: a real MLflow tracking server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real tracking server on a free local port with its own SQLite file and artifacts."""
    if not MLFLOW.exists():
        pytest.skip(f"no mlflow executable beside {sys.executable}")
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # No background job runner (its huey consumers are a handful more processes to start).
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = (base / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
            "--artifacts-destination", str(base / "artifacts"),
        ],
        cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}:\n{_tail(base)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up after 60 s:\n{_tail(base)}")
            time.sleep(0.25)
        yield {"url": url, "artifacts": base / "artifacts"}
    finally:
        _stop(process)
        log.close()


def _tail(base: Path) -> str:
    return (base / "server.log").read_text(errors="replace")[-3000:]


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's whole process group (it starts a uvicorn worker), then kill it."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
    process.wait(timeout=5)


def write_split(folder: Path, n_train: int = 400, n_val: int = 100, n_test: int = 200) -> Path:
    """A small preprocessed split like the preprocess stage's: one bright pixel per class.

    Writes ``folder/mnist.npz`` (float32 images in [0, 1], uint8 labels) and ``summary.json``.
    """
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = rng.integers(0, 10, n)
        X = rng.random((n, 784), dtype=np.float32) * 0.2
        X[np.arange(n), y * 70] += 0.8
        arrays[f"X_{name}"], arrays[f"y_{name}"] = X, y.astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "mnist.npz", **arrays)
    (folder / "summary.json").write_text(
        json.dumps({"sha256": {"train-images-idx3-ubyte": "ab" * 32}})
    )
    return folder / "mnist.npz"


MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
ROOT = Path(__file__).resolve().parents[1]


def mnist_mirror() -> Path | None:
    """The real MNIST files: ``MNIST_MIRROR``, else ``../shared/mnist``; None when absent."""
    configured = os.environ.get("MNIST_MIRROR")
    folder = Path(configured) if configured else ROOT.parent / "shared" / "mnist"
    return folder if all((folder / name).exists() for name in MNIST_FILES) else None


def clone_working_tree(dest: Path) -> Path:
    """A git clone of the project carrying the working tree's files (committed or not)."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture
def clean_mlflow_state():
    """No tracking URI from outside, and none left behind (mlflow.set_tracking_uri sets the
    environment variable); no active run left behind."""
    import mlflow

    from pipeline import tracking

    keys = ("MLFLOW_TRACKING_URI", *tracking._HTTP_DEFAULTS)
    saved = {key: os.environ.pop(key, None) for key in keys}
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    for key, value in saved.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value
