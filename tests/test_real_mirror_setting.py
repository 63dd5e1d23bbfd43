"""The real-mirror download test follows ``MNIST_MIRROR`` on any layout.

It runs ``tests/test_download.py::test_real_local_mirror`` in a subprocess with ``MNIST_MIRROR``
set: to an empty folder it must fail (it tried what it was given, not a folder beside the
checkout), and to an ``http://`` URL serving the real files it must pass, fetching all four from
that URL.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading

import pytest

from pipeline.names import MNIST_FILES

from helpers.data import mnist_mirror
from helpers.project import ROOT, command_env

TEST = "tests/test_download.py::test_real_local_mirror"


def _run(mirror: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider", "-rs"],
        cwd=ROOT,
        env=command_env(MNIST_MIRROR=mirror),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_empty_mnist_mirror_fails_the_test_rather_than_falling_back(tmp_path):
    result = _run(str(tmp_path))
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 failed" in result.stdout and str(tmp_path) in result.stdout


def test_a_url_in_mnist_mirror_is_used(tmp_path):
    folder = mnist_mirror()
    if folder is None:
        pytest.skip("real MNIST not available: set MNIST_MIRROR to a folder with the four files")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = _run(f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 passed" in result.stdout
    assert sorted(requests) == sorted(f"/{name}" for name in MNIST_FILES.values())
