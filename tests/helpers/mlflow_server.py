"""A real ``mlflow server`` on 127.0.0.1, started and stopped by a test or a fixture."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(base: Path, timeout: float = 60) -> Iterator[dict]:
    """A tracking server on a free local port with its own SQLite file and artifacts under
    ``base``; yields ``{"url", "artifacts", "process"}``, stops the whole process group after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # No background job runner (its huey consumers are a handful more processes to start).
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log_path = base / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
                "--artifacts-destination", str(base / "artifacts"),
            ],
            cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            _wait_until_up(process, url, log_path, timeout)
            yield {"url": url, "artifacts": base / "artifacts", "process": process}
        finally:
            stop(process)


def _wait_until_up(process: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {process.returncode}:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server not up after {timeout} s:\n{_tail(log_path)}")
        time.sleep(0.25)


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


def stop(process: subprocess.Popen) -> None:
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
