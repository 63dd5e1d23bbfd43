"""The NumPy MLP and the Keras baseline are the same computation.

From the same initial weights and fed the same batches in the same order, both reach the same
weights after a few hundred SGD steps on MNIST-shaped data (784-32-16-10, batch 32), and record the
same loss curve: float32 within 1e-4, float64 within rounding. And the Keras model is built from our
config, not from a second copy of its hyper-parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import compose, validate
from pipeline.data.dataset import Dataset
from pipeline.training import keras_model
from pipeline.training.build import build_model, build_optimizer
from pipeline.training.frameworks import train_numpy

tf, keras = keras_model.import_tensorflow("cpu")

N_TRAIN, N_VAL = 2000, 400  # 63 steps per epoch at batch size 32
EPOCHS = 5  # 315 steps
# Largest |W_numpy - W_keras| after training, and relative tolerance of the loss curves. Measured
# on 2 cores: float32 5e-7 and 2e-7, float64 7e-16 and 1e-15.
TOLERANCE = {"float32": 1e-4, "float64": 1e-12}
LOSS_RTOL = {"float32": 1e-5, "float64": 1e-12}


def mnist_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of 784 pixels in [0, 1]: a faint sparse stroke pattern per digit under dense
    noise, hard enough that the loss still falls steeply after five epochs (large gradients)."""
    rng = np.random.default_rng(seed)
    strokes = (rng.random((10, 784)) < 0.15) * rng.uniform(0.5, 1.0, (10, 784))
    y = rng.integers(0, 10, n)
    noise = (rng.random((n, 784)) < 0.4) * rng.random((n, 784))
    X = np.clip(0.2 * strokes[y] * rng.uniform(0.6, 1.0, (n, 1)) + noise, 0.0, 1.0)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def data() -> Dataset:
    X, y = mnist_like(N_TRAIN + 2 * N_VAL, seed=42)
    return Dataset(
        X_train=X[:N_TRAIN],
        y_train=y[:N_TRAIN],
        X_val=X[N_TRAIN : N_TRAIN + N_VAL],
        y_val=y[N_TRAIN : N_TRAIN + N_VAL],
        X_test=X[N_TRAIN + N_VAL :],
        y_test=y[N_TRAIN + N_VAL :],
    )


def config(*overrides: str):
    return validate(compose([f"train.epochs={EPOCHS}", "train.batch_size=32", *overrides]))


def max_weight_difference(net, model) -> float:
    weights, biases = keras_model.keras_weights(model)
    return max(
        float(np.max(np.abs(a - b)))
        for a, b in zip([*net.weights, *net.biases], [*weights, *biases], strict=True)
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", ["tanh", "relu"])
def test_same_weights_and_loss_curve_after_hundreds_of_steps(data, hidden, dtype):
    init = "he_normal" if hidden == "relu" else "xavier_normal"
    cfg = config(f"model.hidden_activation={hidden}", f"model.init={init}", f"train.dtype={dtype}")
    net, history = train_numpy(cfg, data)
    initial = build_model(cfg, 784)
    model, keras_history = keras_model.train_keras(cfg, data, same_batches=True)

    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(net.weights, initial.weights))
    assert moved > 0.05, "training barely moved the weights: the comparison would say nothing"
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * 63
    assert max_weight_difference(net, model) <= TOLERANCE[dtype]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            keras_history[key], history[key], rtol=LOSS_RTOL[dtype], err_msg=key
        )
    for key, n in (("accuracy", N_TRAIN), ("val_accuracy", N_VAL)):  # as counts of hits
        hits = np.rint(np.array(history[key]) * n)
        np.testing.assert_array_equal(np.rint(np.array(keras_history[key]) * n), hits, key)
    assert keras_history["epoch"] == history["epoch"]


def test_other_batches_lead_elsewhere(data):
    """The control: the same start but TensorFlow's own shuffle ends far from the NumPy weights,
    so the equality above is the batches' doing."""
    cfg = config()
    net, _ = train_numpy(cfg, data)
    model, _ = keras_model.train_keras(cfg, data, same_batches=False)
    assert max_weight_difference(net, model) > 100 * TOLERANCE["float32"]
    again, _ = keras_model.train_keras(cfg, data, same_batches=False)  # seeded: reproducible
    for ours, theirs in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_batch_orders_are_those_fit_draws():
    cfg = config()
    net = build_model(cfg, 784)
    orders = keras_model.batch_orders(net, 100, 3)
    expected = build_model(cfg, 784).rng  # same seed, same draws for the initial weights
    for order in orders:
        np.testing.assert_array_equal(order, expected.permutation(100))
    assert all(np.array_equal(o, np.arange(7)) for o in keras_model.batch_orders(net, 7, 2, False))


def test_keras_model_is_built_from_the_config():
    cfg = config(
        "model.hidden_sizes=[64,24,12]",
        "model.hidden_activation=relu",
        "optimizer=momentum",
        "optimizer.learning_rate=0.03",
        "optimizer.nesterov=true",
        "train.dtype=float64",
    )
    net = build_model(cfg, 784)
    with keras_model.floatx(cfg.train.dtype):
        model = keras_model.build_keras_model(cfg, net)
    dense = [layer for layer in model.layers if layer.weights]
    assert [layer.units for layer in dense] == [64, 24, 12, 10]
    assert [layer.activation.__name__ for layer in dense] == ["relu"] * 3 + ["softmax"]
    assert all(layer.kernel.dtype == "float64" for layer in dense)
    weights, biases = keras_model.keras_weights(model)
    for ours, theirs in zip([*net.weights, *net.biases], [*weights, *biases], strict=True):
        np.testing.assert_array_equal(theirs, ours)  # the very initial weights

    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert float(optimizer.learning_rate.numpy()) == 0.03
    assert optimizer.learning_rate.dtype == "float64"
    assert optimizer.momentum == cfg.optimizer.momentum == 0.9
    assert optimizer.nesterov is True
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)


def test_adam_sse_and_weight_decay_come_from_the_config():
    cfg = config(
        "optimizer=adam",
        "optimizer.learning_rate=0.002",
        "optimizer.beta1=0.8",
        "optimizer.epsilon=1e-6",
        "optimizer.weight_decay=0.01",
        "model.loss=sse",
        "model.output_activation=sigmoid",
    )
    net = build_model(cfg, 784)
    model = keras_model.build_keras_model(cfg, net)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.002)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.8, 0.999, 1e-6)
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert model.loss.name == "sse"
    assert model.layers[1].kernel_regularizer.l2 == pytest.approx(0.005)


def test_one_step_with_weight_decay_and_sse_equals_numpy():
    """L2(weight_decay / 2) gives the gradient weight_decay * W, as mlp.optimizers adds it.

    Keras's L2 casts its factor through float32 (``ops.cast(0.025, float64)``), a relative 1e-8;
    a factor off by 2 would be off by ~1e-3 here.
    """
    cfg = config(
        "optimizer.weight_decay=0.05",
        "model.loss=sse",
        "train.dtype=float64",
        "train.epochs=1",
        "train.batch_size=64",
    )
    X, y = mnist_like(64, seed=3)
    one_batch = Dataset(X, y, X[:0], y[:0], X[:0], y[:0])
    net = build_model(cfg, 784)
    net.fit(X, y, epochs=1, batch_size=64, optimizer=build_optimizer(cfg), shuffle=False)
    model, _ = keras_model.train_keras(cfg, one_batch, same_batches=True)
    assert max_weight_difference(net, model) <= 1e-9


def test_net_of_another_config_is_refused():
    cfg = config()
    other = build_model(config("model.hidden_sizes=[8]"), 784)
    with pytest.raises(ValueError, match="not the network of this config"):
        keras_model.build_keras_model(cfg, other)


@pytest.mark.parametrize(
    "schedule",
    [
        ["train.schedule.name=step", "train.schedule.step_size=2", "train.schedule.gamma=0.3"],
        ["train.schedule.name=cosine", "train.schedule.warmup_epochs=1"],
    ],
    ids=["step", "cosine"],
)
def test_schedule_and_max_norm_map_to_the_same_computation(data, schedule):
    """A schedule becomes Keras's LearningRateScheduler with the same factors, max-norm its
    MaxNorm constraint (whose epsilon shrinks columns by a relative 1e-7 a step: within the
    float32 tolerance)."""
    cfg = config(
        "model.hidden_activation=relu",
        "model.init=he_normal",
        "optimizer=momentum",
        "train.max_norm=0.6",
        *schedule,
    )
    net, history = train_numpy(cfg, data)
    model, keras_history = keras_model.train_keras(cfg, data, same_batches=True)
    assert max(np.linalg.norm(W, axis=0).max() for W in net.weights) == pytest.approx(0.6, 1e-5)
    assert keras_history["learning_rate"] == pytest.approx(history["learning_rate"], rel=1e-7)
    assert len(set(history["learning_rate"])) > 2
    assert max_weight_difference(net, model) <= TOLERANCE["float32"]
    np.testing.assert_allclose(keras_history["loss"], history["loss"], rtol=LOSS_RTOL["float32"])
