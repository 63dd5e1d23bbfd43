"""``make serve`` (``python -m pipeline.serve``): the champion over HTTP, with a real
``mlflow models serve`` on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from mlp import MLP
from pipeline import serve, tracking, train
from pipeline.config import compose, validate
from pipeline.data.dataset import load_dataset

from helpers.mlflow_server import free_port, stop
from helpers.project import ROOT, command_env

pytestmark = pytest.mark.usefixtures("clean_mlflow_state")


def test_without_a_champion_it_says_how_to_make_one(project, capsys):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    assert serve.main(["--uri", uri, "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: models:/mnist-mlp@champion is not in the model registry")
    assert "run a sweep first" in err and "Traceback" not in err


def test_a_port_in_use_is_a_clear_error(project, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve.main(["--uri", f"sqlite:///{project / 'mlflow.db'}", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "--port" in err


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_the_champion_is_served_and_predicts_what_the_network_predicts(project):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    result = train.run(validate(compose([f"tracking.uri={uri}", "train.epochs=3"])))
    tracking.set_champion(uri, result.model_version)

    port = free_port()
    log = (project / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.serve", "--uri", uri, "--port", str(port)],
        cwd=ROOT, env=command_env(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (project / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, (project / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        X = load_dataset(project / "data/processed/mnist.npz").X_test[:50]
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": X.tolist()})
    finally:
        stop(server)
        log.close()
    probs = np.asarray(answer["predictions"], dtype=np.float32)
    net = MLP.load(project / "models/model.npz")
    np.testing.assert_array_equal(probs.argmax(axis=1), net.predict(X))
    np.testing.assert_allclose(probs, net.forward(X), rtol=1e-6)
    assert (
        f"models:/mnist-mlp@champion (mnist-mlp version {result.model_version})"
        in (project / "serve.log").read_text()
    )
