"""Every training run's network is an MLflow model: loadable by run, by logged model and from the
registry, giving what the network gives; linked to its run's metrics and datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlp import MLP
from pipeline import evaluate, train
from pipeline.config import compose, validate
from pipeline.data.dataset import load_dataset
from pipeline.names import N_CLASSES, N_INPUTS
from pipeline.tracking.datasets import array_digest

pytestmark = pytest.mark.usefixtures("clean_mlflow_state")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, empty_store):
    """One ``train`` + ``evaluate`` of a tiny split in a project folder of its own (each test
    only reads it): ``{"folder", "uri", "run_id", "model_id", "version", "split"}``."""
    import shutil

    from helpers.data import write_split

    folder = tmp_path_factory.mktemp("trained")
    shutil.copy(empty_store, folder / "mlflow.db")
    write_split(folder / "data/processed")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            patch.delenv(key)
        patch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")  # a short run gets some
        cfg = validate(compose([f"tracking.uri={uri}", "train.epochs=3"]))
        result = train.run(cfg)
        evaluate.run(cfg)
    mlflow.set_tracking_uri(None)
    return {
        "folder": folder,
        "uri": uri,
        "run_id": result.run_id,
        "model_id": result.model_id,
        "version": result.model_version,
        "split": load_dataset(folder / "data/processed/mnist.npz"),
    }


def test_the_model_loads_by_run_by_model_and_by_version_and_predicts_what_the_network_does(
    trained,
):
    mlflow.set_tracking_uri(trained["uri"])
    X = trained["split"].X_test
    expected = MLP.load(trained["folder"] / "models/model.npz").forward(X)
    for uri in (
        f"runs:/{trained['run_id']}/model",
        f"models:/{trained['model_id']}",
        f"models:/mnist-mlp/{trained['version']}",
    ):
        model = mlflow.pyfunc.load_model(uri)
        np.testing.assert_array_equal(model.predict(X), expected, err_msg=uri)


def test_the_model_has_a_signature_an_input_example_and_pinned_requirements(trained):
    mlflow.set_tracking_uri(trained["uri"])
    info = mlflow.models.get_model_info(f"models:/{trained['model_id']}")
    (inputs,) = info.signature.inputs.inputs
    (outputs,) = info.signature.outputs.inputs
    assert (inputs.type, inputs.shape) == (np.dtype("float32"), (-1, N_INPUTS))
    assert (outputs.type, outputs.shape) == (np.dtype("float32"), (-1, N_CLASSES))
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{trained['model_id']}"))
    example = json.loads((local / "input_example.json").read_text())
    assert np.asarray(example).shape == (2, N_INPUTS)
    request = json.loads((local / "serving_input_example.json").read_text())  # for /invocations
    assert request == {"inputs": example}
    requirements = (local / "requirements.txt").read_text().split()
    assert f"mlflow=={mlflow.__version__}" in requirements
    assert f"numpy=={np.__version__}" in requirements
    # nothing pickled: the model's code is a file, and the library a copy of mlp/
    assert (local / "mlp_pyfunc.py").exists() and (local / "code/mlp/network.py").exists()
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("__pycache__"))


def test_the_model_loads_and_predicts_without_this_project(trained, tmp_path):
    """In a Python where ``pipeline`` cannot be imported, from a folder outside the project:
    the model brings its own copy of ``mlp``."""
    X = trained["split"].X_test[:20]
    np.save(tmp_path / "X.npy", X)
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pipeline"] = None  # `import pipeline` fails from here on
        import mlflow, numpy as np
        mlflow.set_tracking_uri(sys.argv[1])
        model = mlflow.pyfunc.load_model(sys.argv[2])
        np.save("probs.npy", model.predict(np.load("X.npy")))
        import mlp
        print(mlp.__file__)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", script, trained["uri"], f"models:/{trained['model_id']}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "/code/mlp/" in done.stdout  # the model's copy, not the project's
    expected = MLP.load(trained["folder"] / "models/model.npz").forward(X)
    np.testing.assert_array_equal(np.load(tmp_path / "probs.npy"), expected)


def test_the_model_is_linked_to_its_runs_metrics_and_datasets(trained):
    client = MlflowClient(trained["uri"])
    run = client.get_run(trained["run_id"])
    model = client.get_logged_model(trained["model_id"])
    assert model.source_run_id == trained["run_id"] and model.status == "READY"
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(model.model_id, 3)]
    linked = {(m.key, m.dataset_name): m.value for m in model.metrics}
    for name in ("test_top1_accuracy", "test_cross_entropy", "test_macro_f1"):
        assert linked[(name, "mnist-test")] == run.data.metrics[name]
    assert linked[("val_accuracy", "mnist-validation")] == run.data.metrics["val_accuracy"]
    assert linked[("train_loss", "mnist-train")] == run.data.metrics["train_loss"]
    assert linked[("train_seconds", None)] == run.data.metrics["train_seconds"]
    assert not [key for key, _ in linked if key.startswith("system/")]
    assert model.params == run.data.params
    for tag in ("mlflow.source.name", "mlflow.user", "mlflow.note.content"):  # as the run's
        assert model.tags[tag] == run.data.tags[tag], tag

    split = trained["split"]
    inputs = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i
        for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation", "test"}
    for context, name, (X, y) in (
        ("training", "mnist-train", (split.X_train, split.y_train)),
        ("validation", "mnist-validation", (split.X_val, split.y_val)),
        ("test", "mnist-test", (split.X_test, split.y_test)),
    ):
        dataset = inputs[context].dataset
        sha256 = array_digest(X, y)
        assert (dataset.name, dataset.digest) == (name, sha256[:16])
        assert json.loads(dataset.profile) == {
            "num_rows": len(y),
            "features_shape": list(X.shape),
            "sha256": sha256,
        }
    source_tags = {t.key: t.value for t in inputs["training"].tags}
    assert source_tags["source.sha256.train-images-idx3-ubyte"] == "ab" * 32


def test_the_registered_version_carries_validation_and_test_accuracy(trained):
    client = MlflowClient(trained["uri"])
    version = client.get_model_version("mnist-mlp", trained["version"])
    run = client.get_run(trained["run_id"])
    assert version.run_id == trained["run_id"]
    assert version.source == f"models:/{trained['model_id']}"
    # the model knows its versions (the UI's "Registered models" and "Model versions")
    model = client.get_logged_model(trained["model_id"])
    assert json.loads(model.tags["mlflow.modelVersions"]) == [
        {"name": "mnist-mlp", "version": int(trained["version"])}
    ]
    tags = version.tags
    assert tags["origin"] == "train stage"
    assert float(tags["val_top1_accuracy"]) == pytest.approx(run.data.metrics["val_accuracy"])
    assert float(tags["test_top1_accuracy"]) == pytest.approx(
        run.data.metrics["test_top1_accuracy"]
    )
    assert tags["validation_data"] == next(
        i.dataset.digest for i in run.inputs.dataset_inputs if i.dataset.name == "mnist-validation"
    )
    run_json = json.loads((trained["folder"] / "reports/train/run.json").read_text())
    assert (run_json["model_id"], run_json["model_version"]) == (
        trained["model_id"],
        trained["version"],
    )


def test_parameters_are_the_knobs_and_no_metric_has_two_names(trained):
    run = MlflowClient(trained["uri"]).get_run(trained["run_id"])
    model = ("name", "hidden_sizes", "hidden_activation", "output_activation", "loss", "init")
    model += ("dropout", "input_dropout")
    sgd = ("name", "learning_rate", "momentum", "nesterov", "weight_decay")  # no Adam fields
    train = ("epochs", "batch_size", "shuffle", "dtype", "batch_parts", "blas_threads", "max_norm")
    # no schedule fields without a schedule, no early-stopping settings while it is off
    train += ("schedule.name", "early_stopping.enabled")
    assert set(run.data.params) == {
        "seed",
        "data.validation_size",
        "data.split_seed",
        "data.train_limit",
        *(f"model.{k}" for k in model),
        *(f"optimizer.{k}" for k in sgd),
        *(f"train.{k}" for k in train),
    }
    metrics = set(run.data.metrics)
    assert not [m for m in metrics if m.startswith("final_")]
    assert {"train_loss", "val_accuracy", "train_seconds", "test_top1_accuracy"} <= metrics
    # everything else is still in the run's config.yaml
    config = yaml.safe_load(
        Path(
            MlflowClient(trained["uri"]).download_artifacts(
                trained["run_id"], "config.yaml", str(trained["folder"])
            )
        ).read_text()
    )
    assert config["data"]["mirrors"] and config["tracking"]["uri"] == trained["uri"]


def test_training_runs_record_system_metrics_and_describe_themselves(trained):
    client = MlflowClient(trained["uri"])
    run = client.get_run(trained["run_id"])
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert "system/system_memory_usage_megabytes" in run.data.metrics
    description = run.data.tags["mlflow.note.content"]
    assert description.startswith("NumPy MLP 784-32-16-10 (tanh, softmax, cross_entropy)")
    assert "stage `train`" in description
    experiment = client.get_experiment(run.info.experiment_id)
    assert "`sweep`" in experiment.tags["mlflow.note.content"]
    # the UI opens it as model training, not GenAI
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    tags = run.data.tags
    assert (tags["host"], tags["pid"]) == (os.uname().nodename, str(os.getpid()))


@pytest.mark.slow
def test_the_keras_baseline_is_a_keras_flavor_model(project):
    from pipeline import baseline
    from pipeline.training import keras_model

    uri = f"sqlite:///{project / 'mlflow.db'}"
    cfg = validate(compose([f"tracking.uri={uri}", "train.epochs=2"]))
    result = baseline.run(cfg)
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(f"runs:/{result.run_id}/model")
    assert "keras" in info.flavors and "python_function" in info.flavors
    X = load_dataset(project / "data/processed/mnist.npz").X_test
    saved = keras_model.load_keras_model(project / "models/baseline.keras")
    expected = keras_model.predict_proba(saved, X, "float32")
    probs = np.asarray(mlflow.pyfunc.load_model(f"models:/{result.model_id}").predict(X))
    np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)
    assert result.model_version is None  # only the NumPy model is registered
