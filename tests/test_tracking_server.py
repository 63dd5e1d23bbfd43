"""pipeline.tracking against a real ``mlflow server``, checked through its REST API."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import numpy as np
import pytest
import yaml

import mlp
from pipeline import tracking

pytestmark = pytest.mark.usefixtures("clean_mlflow_state")
CONFIG = {
    "seed": 0,
    "model": {"layer_sizes": [8, 6, 3]},
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "train": {"epochs": 2, "batch_size": 32},
}


def _get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _experiment_id(url: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    return _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}")["experiment"][
        "experiment_id"
    ]


def test_server_is_reachable(server):
    tracking.check_tracking_server(server["url"], timeout=2)


def test_training_run_logged_to_the_server(server, monkeypatch):
    url = server["url"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # as a user points the pipeline at a server
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 8)), rng.integers(0, 3, size=200)
    with tracking.start_run(
        CONFIG, stage="train", experiment="server-test", data_digests={"train_images": "f" * 64}
    ) as run:
        mlp.MLP([8, 6, 3], seed=0).fit(
            X, y, epochs=2, batch_size=32, optimizer=mlp.SGD(0.1), validation=(X[:50], y[:50]),
            callbacks=[run.epoch_logger()],
        )  # fmt: skip
    run_id = run.id

    experiment_id = _experiment_id(url, "server-test")
    found = _post(
        f"{url}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment_id], "filter": "tags.stage = 'train'"},
    )["runs"]
    assert [r["info"]["run_id"] for r in found] == [run_id]
    info, data = found[0]["info"], found[0]["data"]
    assert info["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in data["params"]}
    assert params["model.layer_sizes"] == "[8, 6, 3]"
    assert params["optimizer.learning_rate"] == "0.1"
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert tags["data.sha256.train_images"] == "f" * 64
    assert tags["git.commit"]

    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
        query = urllib.parse.urlencode({"run_id": run_id, "metric_key": name})
        history = _get(f"{url}/api/2.0/mlflow/metrics/get-history?{query}")["metrics"]
        assert sorted(m["step"] for m in history) == [1, 2], name

    query = urllib.parse.urlencode({"run_id": run_id})
    files = _get(f"{url}/api/2.0/mlflow/artifacts/list?{query}").get("files", [])
    assert [f["path"] for f in files] == ["config.yaml"]
    # Proxied artifacts: the server wrote them under its --artifacts-destination.
    # The server (shared by the session's tests) keeps this run's artifact under its run id.
    stored = [p for p in server["artifacts"].rglob("config.yaml") if run_id in p.parts]
    assert len(stored) == 1
    assert yaml.safe_load(stored[0].read_text()) == CONFIG


def test_failed_run_on_the_server(server):
    url = server["url"]
    with pytest.raises(mlp.DivergenceError):
        with tracking.start_run(CONFIG, stage="train", experiment="server-test", uri=url) as run:
            raise mlp.DivergenceError(epoch=1, step=3, steps_per_epoch=7, loss=float("inf"))
    got = _get(f"{url}/api/2.0/mlflow/runs/get?{urllib.parse.urlencode({'run_id': run.id})}")
    assert got["run"]["info"]["status"] == "FAILED"
    tags = {t["key"]: t["value"] for t in got["run"]["data"]["tags"]}
    assert (tags["diverged_epoch"], tags["diverged_step"]) == ("1", "3")
