"""Every config key changes what it claims to change.

For each key that reaches the NumPy MLP, training through the pipeline's own path
(:func:`pipeline.training.frameworks.train_numpy`, what the train stage, every sweep point and the
reproduce command call) with the key set must

1. give other weights than without it (the key acts: it is not dropped on the way), and
2. give bit for bit the weights of the library called directly with the argument the key claims to
   set (it acts as documented: ``optimizer.nesterov`` is ``SGD(nesterov=...)``, not something else).

Keys that do not reach the library are checked where they act; :data:`ELSEWHERE` names the test of
each, and a key of the schema in neither list fails the completeness test below, so a new key
cannot go untested.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlp import MLP, SGD, Adam, EarlyStopping, schedules
from pipeline.config import Config, compose, validate
from pipeline.data.dataset import Dataset
from pipeline.training.frameworks import train_numpy

TESTS = Path(__file__).resolve().parent
N_FEATURES = 20


def _data() -> Dataset:
    rng = np.random.default_rng(7)
    arrays = {}
    for name, n in (("train", 96), ("val", 40), ("test", 10)):
        y = rng.integers(0, 10, n)
        X = rng.random((n, N_FEATURES), dtype=np.float32) * 0.3
        X[np.arange(n), y * 2] += 0.7
        arrays[f"X_{name}"], arrays[f"y_{name}"] = X, y.astype(np.intp)
    return Dataset(**arrays)


DATA = _data()

#: The library arguments of the default configuration (with ``train.epochs=3``).
REFERENCE: dict[str, Any] = {
    "hidden": [32, 16],
    "hidden_activation": "tanh",
    "output_activation": "softmax",
    "loss": "cross_entropy",
    "init": "xavier_normal",
    "seed": 0,
    "dtype": "float32",
    "epochs": 3,
    "batch_size": 32,
    "shuffle": True,
    "optimizer": lambda: SGD(0.1),
    "schedule": None,
    "dropout": 0.0,
    "input_dropout": 0.0,
    "max_norm": None,
    "early_stopping": None,
    "batch_parts": 1,
}


def library(**changes: Any) -> tuple[MLP, dict]:
    """The network trained by calling :mod:`mlp` directly: :data:`REFERENCE` with ``changes``."""
    a = {**REFERENCE, **changes}
    sizes = [N_FEATURES, *a["hidden"], 10]
    activations = [a["hidden_activation"]] * len(a["hidden"]) + [a["output_activation"]]
    net = MLP(sizes, activations, loss=a["loss"], init=a["init"], seed=a["seed"], dtype=a["dtype"])
    history = net.fit(
        DATA.X_train,
        DATA.y_train,
        epochs=a["epochs"],
        batch_size=a["batch_size"],
        optimizer=a["optimizer"](),
        validation=DATA.validation,
        shuffle=a["shuffle"],
        schedule=a["schedule"]() if a["schedule"] else None,
        dropout=a["dropout"],
        input_dropout=a["input_dropout"],
        max_norm=a["max_norm"],
        early_stopping=a["early_stopping"]() if a["early_stopping"] else None,
        batch_parts=a["batch_parts"],
    )
    return net, history


def pipeline_trained(overrides: list[str]) -> tuple[MLP, dict]:
    return train_numpy(validate(compose(["train.epochs=3", *overrides])), DATA)


def same(a: tuple[MLP, dict], b: tuple[MLP, dict]) -> bool:
    """Bit-identical parameters and per-epoch losses."""
    (net_a, hist_a), (net_b, hist_b) = a, b
    params_a, params_b = net_a.weights + net_a.biases, net_b.weights + net_b.biases
    return (
        [p.shape for p in params_a] == [p.shape for p in params_b]
        and all(p.dtype == q.dtype and np.array_equal(p, q) for p, q in zip(params_a, params_b))
        and hist_a["loss"] == hist_b["loss"]
        and hist_a.get("val_loss") == hist_b.get("val_loss")
    )


ES = ["train.early_stopping.enabled=true", "train.early_stopping.patience=1"]

#: key -> (overrides that set the scene, the override of the key, the library call it claims).
CASES: dict[str, tuple[list[str], str, dict[str, Any]]] = {
    "seed": ([], "seed=1", {"seed": 1}),
    "model.hidden_sizes": ([], "model.hidden_sizes=[8]", {"hidden": [8]}),
    "model.hidden_activation": (
        [],
        "model.hidden_activation=relu",
        {"hidden_activation": "relu"},
    ),
    "model.output_activation": (
        ["model.loss=sse"],
        "model.output_activation=sigmoid",
        {"loss": "sse", "output_activation": "sigmoid"},
    ),
    "model.loss": ([], "model.loss=sse", {"loss": "sse"}),
    "model.init": ([], "model.init=he_uniform", {"init": "he_uniform"}),
    "model.dropout": ([], "model.dropout=0.5", {"dropout": 0.5}),
    "model.input_dropout": ([], "model.input_dropout=0.3", {"input_dropout": 0.3}),
    "optimizer.name": (
        [],
        "optimizer.name=adam",
        {"optimizer": lambda: Adam(0.1, 0.9, 0.999, 1e-8)},
    ),
    "optimizer.learning_rate": (
        [],
        "optimizer.learning_rate=0.03",
        {"optimizer": lambda: SGD(0.03)},
    ),
    "optimizer.momentum": ([], "optimizer.momentum=0.5", {"optimizer": lambda: SGD(0.1, 0.5)}),
    "optimizer.nesterov": (
        ["optimizer=momentum"],
        "optimizer.nesterov=true",
        {"optimizer": lambda: SGD(0.05, momentum=0.9, nesterov=True)},
    ),
    "optimizer.weight_decay": (
        [],
        "optimizer.weight_decay=0.05",
        {"optimizer": lambda: SGD(0.1, weight_decay=0.05)},
    ),
    "optimizer.weight_decay (adam)": (
        ["optimizer=adam"],
        "optimizer.weight_decay=0.05",
        {"optimizer": lambda: Adam(0.001, 0.9, 0.999, 1e-8, weight_decay=0.05)},
    ),
    "optimizer.beta1": (
        ["optimizer=adam"],
        "optimizer.beta1=0.5",
        {"optimizer": lambda: Adam(0.001, 0.5, 0.999, 1e-8)},
    ),
    "optimizer.beta2": (
        ["optimizer=adam"],
        "optimizer.beta2=0.9",
        {"optimizer": lambda: Adam(0.001, 0.9, 0.9, 1e-8)},
    ),
    "optimizer.epsilon": (
        ["optimizer=adam"],
        "optimizer.epsilon=0.01",
        {"optimizer": lambda: Adam(0.001, 0.9, 0.999, 0.01)},
    ),
    "train.epochs": ([], "train.epochs=2", {"epochs": 2}),
    "train.batch_size": ([], "train.batch_size=16", {"batch_size": 16}),
    "train.shuffle": ([], "train.shuffle=false", {"shuffle": False}),
    "train.dtype": ([], "train.dtype=float64", {"dtype": "float64"}),
    "train.max_norm": ([], "train.max_norm=0.3", {"max_norm": 0.3}),
    # The pipeline gives the blocks to as many threads as it has cores; the library call here
    # computes them all in one thread: the same bits.
    "train.batch_parts": ([], "train.batch_parts=2", {"batch_parts": 2}),
    "train.schedule.name": (
        [],
        "train.schedule.name=exponential",
        {"schedule": lambda: schedules.ExponentialDecay(0.5)},
    ),
    "train.schedule.gamma": (
        ["train.schedule.name=exponential"],
        "train.schedule.gamma=0.2",
        {"schedule": lambda: schedules.ExponentialDecay(0.2)},
    ),
    "train.schedule.step_size": (
        ["train.schedule.name=step"],
        "train.schedule.step_size=1",
        {"schedule": lambda: schedules.StepDecay(1, 0.5)},
    ),
    "train.schedule.warmup_epochs": (
        ["train.schedule.name=cosine"],
        "train.schedule.warmup_epochs=2",
        {"schedule": lambda: schedules.CosineDecay(2, 0.0)},
    ),
    "train.schedule.final_fraction": (
        ["train.schedule.name=cosine"],
        "train.schedule.final_fraction=0.5",
        {"schedule": lambda: schedules.CosineDecay(0, 0.5)},
    ),
    "train.early_stopping.enabled": (
        ["train.epochs=6", "train.early_stopping.patience=1", "train.early_stopping.min_delta=0.5"],
        "train.early_stopping.enabled=true",
        {"epochs": 6, "early_stopping": lambda: EarlyStopping("val_accuracy", 1, 0.5, True)},
    ),
    "train.early_stopping.patience": (
        ["train.epochs=6", *ES[:1], "train.early_stopping.min_delta=0.5"],
        "train.early_stopping.patience=2",
        {"epochs": 6, "early_stopping": lambda: EarlyStopping("val_accuracy", 2, 0.5, True)},
    ),
    "train.early_stopping.min_delta": (
        ["train.epochs=6", *ES],
        "train.early_stopping.min_delta=0.5",
        {"epochs": 6, "early_stopping": lambda: EarlyStopping("val_accuracy", 1, 0.5, True)},
    ),
    "train.early_stopping.restore_best": (
        ["train.epochs=6", *ES, "train.early_stopping.min_delta=0.5"],
        "train.early_stopping.restore_best=false",
        {"epochs": 6, "early_stopping": lambda: EarlyStopping("val_accuracy", 1, 0.5, False)},
    ),
    "train.early_stopping.monitor": (
        ["train.epochs=6", *ES, "train.early_stopping.min_delta=0.02"],
        "train.early_stopping.monitor=val_loss",
        {"epochs": 6, "early_stopping": lambda: EarlyStopping("val_loss", 1, 0.02, True)},
    ),
}

#: Keys that do not reach :class:`mlp.MLP`, and the test that shows each doing what it claims.
ELSEWHERE = {
    "model.name": "tests/test_config_keys.py::test_tracking_keys_and_model_name_reach_the_run",
    "tracking.uri": "tests/test_config_keys.py::test_tracking_keys_and_model_name_reach_the_run",
    "tracking.experiment": (
        "tests/test_config_keys.py::test_tracking_keys_and_model_name_reach_the_run"
    ),
    "data.train_limit": (
        "tests/test_config_keys.py::test_tracking_keys_and_model_name_reach_the_run"
    ),
    "data.mirrors": "tests/test_config_keys.py::test_download_keys_reach_the_download",
    "data.files": "tests/test_config_keys.py::test_download_keys_reach_the_download",
    "data.timeout": "tests/test_config_keys.py::test_download_keys_reach_the_download",
    "data.retries": "tests/test_config_keys.py::test_download_keys_reach_the_download",
    "data.backoff": "tests/test_config_keys.py::test_download_keys_reach_the_download",
    "data.validation_size": "tests/test_preprocess.py::test_main",
    "data.split_seed": "tests/test_preprocess.py::test_main",
    "train.blas_threads": (
        "tests/test_train_evaluate.py::test_training_respects_the_configured_blas_threads"
    ),
    "baseline.same_batches": "tests/test_baseline.py::test_own_shuffle_when_same_batches_is_off",
    "baseline.device": (
        "tests/test_baseline.py::test_gpu_without_a_gpu_is_a_clear_error_before_any_run"
    ),
}


def _leaf_keys(cls: type, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(cls):
        kind = f.type if isinstance(f.type, type) else None
        nested = {
            "DataConfig", "ModelConfig", "OptimizerConfig", "TrainConfig", "ScheduleConfig",
            "EarlyStoppingConfig", "BaselineConfig", "TrackingConfig",
        }  # fmt: skip
        name = f.type if isinstance(f.type, str) else getattr(kind, "__name__", "")
        if name in nested:
            import pipeline.config as module

            keys |= _leaf_keys(getattr(module, name), f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def test_every_config_key_is_shown_to_act():
    keys = _leaf_keys(Config)
    assert "optimizer.nesterov" in keys and "train.early_stopping.monitor" in keys
    cases = {key.split(" ")[0] for key in CASES}  # "optimizer.weight_decay (adam)": the key
    unchecked = keys - cases - set(ELSEWHERE)
    assert not unchecked, f"config keys with no test showing what they change: {sorted(unchecked)}"
    assert not (cases | set(ELSEWHERE)) - keys, "keys listed here that the schema lacks"


@pytest.mark.parametrize("key", sorted(ELSEWHERE))
def test_the_named_test_of_each_other_key_exists(key):
    path, _, name = ELSEWHERE[key].partition("::")
    tree = ast.parse((TESTS.parent / path).read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert name in names, f"{key}: {ELSEWHERE[key]} does not exist"


@pytest.mark.parametrize("key", sorted(CASES))
def test_key_reaches_the_library_as_documented(key):
    scene, override, claimed = CASES[key]
    without = pipeline_trained(scene)
    with_key = pipeline_trained([*scene, override])
    assert not same(with_key, without), f"{override} changed nothing"
    expected = library(**claimed)
    assert same(with_key, expected), f"{override} did not act as {claimed}"


def test_early_stopping_cases_really_stop_early():
    """The early-stopping cases above compare runs that stop at different epochs."""
    for key in ("train.early_stopping.enabled", "train.early_stopping.patience"):
        scene, override, _ = CASES[key]
        _, history = pipeline_trained([*scene, override])
        assert history["stopped_epoch"] < 6, key


# ------------------------------------------------------------------ the keys that act elsewhere
def test_tracking_keys_and_model_name_reach_the_run(project):
    """``tracking.uri`` and ``tracking.experiment`` choose where the run lands, ``model.name``
    names it, and ``data.train_limit`` trains on the first images only."""
    from mlflow.tracking import MlflowClient

    from pipeline import train
    from pipeline.data.dataset import load_dataset

    other = project / "elsewhere" / "other.db"
    cfg = validate(
        compose(
            [
                f"tracking.uri=sqlite:///{other}",
                "tracking.experiment=keys-under-test",
                "model.name=mine",
                "data.train_limit=50",
                "train.epochs=1",
            ]
        )
    )
    result = train.run(cfg, project / "data/processed/mnist.npz", project / "m.npz", project / "r")
    client = MlflowClient(f"sqlite:///{other}")
    experiment = client.get_experiment_by_name("keys-under-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == result.run_id
    assert run.info.run_name.startswith("mine ")
    assert MlflowClient(f"sqlite:///{project / 'mlflow.db'}").search_runs(["0"]) == []
    data = load_dataset(project / "data/processed/mnist.npz")
    full = load_dataset(project / "data/processed/mnist.npz", train_limit=50)
    assert len(full.y_train) == 50 < len(data.y_train)
    expected, _ = train_numpy(cfg, full)
    trained = MLP.load(project / "m.npz")
    for got, want in zip(trained.weights, expected.weights, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.fixture
def download_scene(tmp_path):
    """Fake MNIST files served over HTTP under /good/; /busy/ always answers 503; a second
    listener accepts connections and never answers. Yields (files, urls, request log)."""
    import functools
    import http.server
    import socket
    import threading

    from helpers.idx import write_fake_mnist

    root = tmp_path / "www"
    files = write_fake_mnist(root / "good")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path.startswith("/busy/"):
                self.send_error(503)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.create_server(("127.0.0.1", 0))  # connections queue up, never answered
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = {
        "good": f"{base}/good/",
        "busy": f"{base}/busy/",
        "silent": f"http://127.0.0.1:{silent.getsockname()[1]}/mnist/",
    }
    yield files, urls, requests
    server.shutdown()
    server.server_close()
    silent.close()


def _download_config(files, mirrors, **data):
    from pipeline.config import to_dict

    raw = to_dict(validate(compose()))
    raw["data"].update({"files": files, "mirrors": mirrors, **data})
    return validate(raw)


def test_download_keys_reach_the_download(tmp_path, download_scene, caplog, monkeypatch):
    """``data.mirrors`` in their order, ``data.retries`` attempts per source, ``data.backoff``
    doubling between them, ``data.timeout`` per request, ``data.files``' digests decide."""
    import logging

    from pipeline import download
    from pipeline.data.fetch import DownloadError

    monkeypatch.delenv("MNIST_MIRROR", raising=False)
    files, urls, requests = download_scene
    caplog.set_level(logging.INFO, logger="pipeline")
    cfg = _download_config(
        files,
        [urls["busy"], urls["silent"], urls["good"]],
        retries=3,
        backoff=0.01,
        timeout=0.2,
    )
    out = tmp_path / "raw"
    download.run(cfg, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(s["filename"] for s in files.values())
    for spec in files.values():
        name = spec["filename"]
        assert requests.count(f"/busy/{name}") == 3  # data.retries attempts, no more
        assert requests.index(f"/busy/{name}") < requests.index(f"/good/{name}")
    text = caplog.text
    assert "retrying in 0.01 s" in text and "retrying in 0.02 s" in text  # doubling
    assert "retrying in 0.04 s" not in text  # three attempts: two waits
    assert "timed out after 0.2 s" in text

    wrong = {**files, "test_labels": {**files["test_labels"], "sha256": "0" * 64}}
    cfg = _download_config(wrong, [urls["good"]], retries=1, backoff=0.0, timeout=5.0)
    with pytest.raises(DownloadError, match=files["test_labels"]["filename"]):
        download.run(cfg, tmp_path / "raw2")
    assert not (tmp_path / "raw2" / files["test_labels"]["filename"]).exists()
