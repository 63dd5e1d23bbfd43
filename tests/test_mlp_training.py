"""Training: it learns, it is reproducible, and ``fit`` does exactly the SGD of seed 002
(eqs. 66-68) on the batches it says it uses."""

from __future__ import annotations

import copy
import math
import pickle
import re

import numpy as np
import pytest

import mlp
import mlp.network
from mlp import MLP, SGD, Adam, Callback


def rings(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric noisy rings in the plane (radius 1: class 0, radius 2: class 1)."""
    labels = rng.integers(0, 2, n)
    radius = np.where(labels == 0, 1.0, 2.0) + rng.normal(0.0, 0.15, n)
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle)]), labels


def _blobs(n: int = 10, n_features: int = 4, n_classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_features)), rng.integers(0, n_classes, n)


class Recorder(Callback):
    """Records every hook call."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.info: dict | None = None
        self.history: dict | None = None

    def on_train_begin(self, model, info):
        self.info = dict(info)
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, epoch, step, loss):
        self.calls.append(("batch_end", epoch, step, loss))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, history):
        self.history = history
        self.calls.append(("train_end",))

    def batches(self) -> list[tuple[int, int, float]]:
        return [c[1:] for c in self.calls if c[0] == "batch_end"]


def _same_history(a: dict, b: dict) -> bool:
    keys = set(a) - {"seconds"}
    return set(a) == set(b) and all(a[k] == b[k] for k in keys)


# ------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("hidden", ["tanh", "relu"])
def test_learns_concentric_rings(hidden):
    rng = np.random.default_rng(42)
    X, y = rings(600, rng)
    X_test, y_test = rings(400, rng)
    net = MLP([2, 16, 2], [hidden, "softmax"], seed=0)
    history = net.fit(X, y, epochs=30, batch_size=16, optimizer=SGD(0.1, momentum=0.9))
    assert np.mean(net.predict(X_test) == y_test) > 0.95
    assert history["loss"][-1] < history["loss"][0] / 5


def test_rings_need_a_nonlinear_hidden_layer():
    """Control for the test above: with a linear hidden layer the rings are not separable."""
    rng = np.random.default_rng(42)
    X, y = rings(600, rng)
    X_test, y_test = rings(400, rng)
    net = MLP([2, 16, 2], ["linear", "softmax"], seed=0)
    net.fit(X, y, epochs=30, batch_size=16, optimizer=SGD(0.01, momentum=0.9))
    assert np.mean(net.predict(X_test) == y_test) < 0.75


def test_adam_also_learns_rings():
    rng = np.random.default_rng(1)
    X, y = rings(600, rng)
    X_test, y_test = rings(400, rng)
    net = MLP([2, 16, 2], ["tanh", "softmax"], seed=0)
    net.fit(X, y, epochs=30, batch_size=16, optimizer=Adam(0.01))
    assert np.mean(net.predict(X_test) == y_test) > 0.95


# ------------------------------------------------------------------------------- reproducibility
def _fit_rings(seed: int, dtype: str = "float32"):
    X, y = rings(200, np.random.default_rng(3))
    net = MLP([2, 8, 2], ["tanh", "softmax"], seed=seed, dtype=dtype)
    history = net.fit(
        X, y, epochs=3, batch_size=16, optimizer=SGD(0.1, momentum=0.9), validation=(X, y)
    )
    return net, history


def test_same_seed_gives_bit_identical_training():
    net_a, history_a = _fit_rings(seed=5)
    net_b, history_b = _fit_rings(seed=5)
    for p, q in zip((*net_a.weights, *net_a.biases), (*net_b.weights, *net_b.biases), strict=True):
        assert np.array_equal(p, q)
    assert _same_history(history_a, history_b)


def test_different_seeds_differ():
    net_a, history_a = _fit_rings(seed=5)
    net_b, history_b = _fit_rings(seed=6)
    assert not np.array_equal(MLP([2, 8, 2], seed=5).weights[0], MLP([2, 8, 2], seed=6).weights[0])
    assert not np.array_equal(net_a.weights[0], net_b.weights[0])
    assert history_a["loss"] != history_b["loss"]


@pytest.mark.parametrize("init", ["xavier_normal", "xavier_uniform", "he_normal", "he_uniform"])
def test_float32_and_float64_start_from_the_same_weights(init):
    net32 = MLP([7, 5, 4, 3], init=init, seed=11, dtype="float32")
    net64 = MLP([7, 5, 4, 3], init=init, seed=11, dtype="float64")
    for w32, w64 in zip(net32.weights, net64.weights, strict=True):
        assert w32.dtype == np.float32 and w64.dtype == np.float64
        assert np.array_equal(w64.astype(np.float32), w32)
    for b32, b64 in zip(net32.biases, net64.biases, strict=True):
        assert b32.dtype == np.float32 and b64.dtype == np.float64
        assert not b32.any() and not b64.any()


def test_training_keeps_the_dtype():
    for dtype in ("float32", "float64"):
        net, _ = _fit_rings(seed=1, dtype=dtype)
        assert all(p.dtype == np.dtype(dtype) for p in (*net.weights, *net.biases))
        assert net.forward(np.zeros((1, 2))).dtype == np.dtype(dtype)


def test_float32_and_float64_training_agree_closely():
    net32, history32 = _fit_rings(seed=2, dtype="float32")
    net64, history64 = _fit_rings(seed=2, dtype="float64")
    np.testing.assert_allclose(history32["loss"], history64["loss"], rtol=1e-3)
    np.testing.assert_allclose(net32.weights[0], net64.weights[0], rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------- batches
@pytest.mark.parametrize(
    ("n", "batch_size", "steps"),
    [(10, 4, 3), (10, 5, 2), (10, 10, 1), (10, 32, 1), (10, 1, 10), (7, 3, 3)],
)
def test_steps_per_epoch_is_ceil_n_over_m(n, batch_size, steps):
    X, y = _blobs(n)
    recorder = Recorder()
    MLP([4, 5, 3], seed=0).fit(X, y, epochs=2, batch_size=batch_size, callbacks=[recorder])
    assert steps == math.ceil(n / min(batch_size, n))
    assert recorder.info["steps_per_epoch"] == steps
    assert recorder.info["n_samples"] == n
    assert [(epoch, step) for epoch, step, _ in recorder.batches()] == [
        (epoch, step) for epoch in (1, 2) for step in range(1, steps + 1)
    ]


def _manual_sgd(net: MLP, X, y, lr: float, batch_size: int, orders):
    """Seed 002's SGD (eqs. 66-67) by hand with ``net.gradients``; one order per epoch.

    Returns the per-epoch mean loss and accuracy, measured on each batch before its step, and
    each batch's mean loss.
    """
    n = X.shape[0]
    losses, accuracies, batch_losses = [], [], []
    true_classes = y if y.ndim == 1 else y.argmax(axis=1)
    for order in orders:
        loss_sum, correct = 0.0, 0
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            Xb, yb = X[idx], y[idx]
            batch_loss = net.loss(Xb, yb)
            batch_losses.append(batch_loss)
            loss_sum += batch_loss * len(idx)
            correct += int(np.sum(net.predict(Xb) == true_classes[idx]))
            dW, db = net.gradients(Xb, yb)
            for param, grad in zip((*net.weights, *net.biases), (*dW, *db), strict=True):
                param -= lr * grad
        losses.append(loss_sum / n)
        accuracies.append(correct / n)
    return losses, accuracies, batch_losses


TRAINING_SETUPS = {
    # (activations, loss, target form)
    "ce-labels": (["tanh", "softmax"], "cross_entropy", "labels"),
    "ce-one_hot": (["tanh", "softmax"], "cross_entropy", "one_hot"),
    "sse-labels": (["relu", "sigmoid"], "sse", "labels"),
    "sse-real": (["sigmoid", "linear"], "sse", "real"),
}


def _setup(name: str, n: int = 10):
    activations, loss, target_form = TRAINING_SETUPS[name]
    X, labels = _blobs(n, seed=4)
    if target_form == "labels":
        y = labels
    elif target_form == "one_hot":
        y = np.eye(3)[labels]
    else:
        y = np.random.default_rng(9).normal(size=(n, 3))
    return MLP([4, 5, 3], activations, loss=loss, seed=8, dtype="float64"), X, y


class UnfoldedSGD(mlp.Optimizer):
    """``param -= lr * grad`` through the generic step: fit then does exactly what
    ``_manual_sgd`` does, operation for operation."""

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def step(self, params, grads):
        for param, grad in zip(params, grads, strict=True):
            param -= self.learning_rate * grad


def _assert_same_parameters(net: MLP, twin: MLP, optimizer: mlp.Optimizer) -> None:
    pairs = zip((*net.weights, *net.biases), (*twin.weights, *twin.biases), strict=True)
    for p, q in pairs:
        if optimizer._fold_scale() is None:
            assert np.array_equal(p, q)
        else:
            # Plain SGD folds the learning rate into the output error (lr * delta, then the
            # products) where the hand loop scales each gradient: the same sums, rounded in
            # another order.
            np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-15)


OPTIMIZERS = {"sgd": lambda lr: SGD(lr), "unfolded": UnfoldedSGD}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("setup", TRAINING_SETUPS)
def test_unshuffled_fit_is_plain_sgd_on_consecutive_slices(setup, optimizer):
    """shuffle=False: batches X[0:4], X[4:8], X[8:10] in that order, the last one partial."""
    net, X, y = _setup(setup)
    twin = copy.deepcopy(net)
    lr, batch_size, epochs = 0.2, 4, 2
    opt = OPTIMIZERS[optimizer](lr)
    history = net.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=opt, shuffle=False)
    losses, accuracies, _ = _manual_sgd(twin, X, y, lr, batch_size, [np.arange(10)] * epochs)
    _assert_same_parameters(net, twin, opt)
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-12)
    assert history["accuracy"] == accuracies
    assert history["epoch"] == [1, 2]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("setup", TRAINING_SETUPS)
def test_shuffled_fit_visits_every_example_once_per_epoch(setup, optimizer):
    """shuffle=True: each epoch is one permutation drawn from the network's own generator."""
    net, X, y = _setup(setup)
    twin = copy.deepcopy(net)
    rng = copy.deepcopy(net.rng)
    orders = [rng.permutation(10) for _ in range(3)]
    opt = OPTIMIZERS[optimizer](0.2)
    history = net.fit(X, y, epochs=3, batch_size=4, optimizer=opt)
    losses, accuracies, _ = _manual_sgd(twin, X, y, 0.2, 4, orders)
    _assert_same_parameters(net, twin, opt)
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-12)
    assert history["accuracy"] == accuracies
    # The generator moved on: the next fit shuffles differently.
    assert not np.array_equal(net.rng.permutation(10), copy.deepcopy(twin.rng).permutation(10))


def _plain_folded_sgd(weights, biases, X, y, lr, batch_size, orders):
    """A tanh..tanh-softmax network trained by SGD in plain NumPy: fresh arrays, fancy-indexed
    batches, no buffers. It does what ``fit`` does for plain SGD, in the same floating-point
    operations: the learning rate folded into the output error ``lr * (p - y) / m``, bias
    gradients as ``ones @ delta``, every error computed before any parameter moves.

    Returns the epochs' mean losses and accuracies, each batch measured before its step.
    """
    n, dtype = X.shape[0], X.dtype
    eps = np.finfo(dtype).eps
    Y = np.eye(weights[-1].shape[1], dtype=dtype)[y]
    losses, accuracies = [], []
    for order in orders:
        p_true, correct = [], 0
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            m = len(idx)
            a = [X[idx]]
            for W, b in zip(weights[:-1], biases[:-1], strict=True):
                a.append(np.tanh(a[-1] @ W + b))
            z = a[-1] @ weights[-1] + biases[-1]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            p_true.append(p[np.arange(m), y[idx]])
            correct += int(np.count_nonzero(p.argmax(axis=1) == y[idx]))
            delta = (p - Y[idx]) * (lr / m)
            updates = []
            for layer in range(len(weights) - 1, -1, -1):
                updates.append((layer, a[layer].T @ delta, np.ones(m, dtype) @ delta))
                if layer:
                    delta = (delta @ weights[layer].T) * (1 - a[layer] * a[layer])
            for layer, dW, db in updates:
                weights[layer] -= dW
                biases[layer] -= db
        p_true = np.concatenate(p_true)
        losses.append(float(-np.log(np.clip(p_true, eps, 1 - eps), dtype=np.float64).sum()) / n)
        accuracies.append(correct / n)
    return losses, accuracies


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "in-order"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_is_bit_identical_to_a_plain_numpy_loop(dtype, shuffle):
    """Gathering batches into reused buffers, folding the learning rate into the output error
    and the fused cross-entropy bookkeeping are speed only: the weights and the history are
    exactly (bit for bit) those of the straightforward loop, last batch partial included."""
    rng = np.random.default_rng(0)
    X = rng.random((203, 40)).astype(dtype)
    y = rng.integers(0, 10, 203)
    net = MLP([40, 16, 12, 10], ["tanh", "tanh", "softmax"], seed=3, dtype=dtype)
    weights = [W.copy() for W in net.weights]
    biases = [b.copy() for b in net.biases]
    generator = copy.deepcopy(net.rng)
    orders = [generator.permutation(203) if shuffle else np.arange(203) for _ in range(3)]
    history = net.fit(X, y, epochs=3, batch_size=32, optimizer=SGD(0.1), shuffle=shuffle)
    losses, accuracies = _plain_folded_sgd(weights, biases, X, y, 0.1, 32, orders)
    for p, q in zip((*net.weights, *net.biases), (*weights, *biases), strict=True):
        assert p.dtype == q.dtype
        assert np.array_equal(p, q)
    assert history["loss"] == losses
    assert history["accuracy"] == accuracies


@pytest.mark.parametrize("setup", TRAINING_SETUPS)
def test_batch_callback_receives_the_batch_mean_loss(setup):
    """Regression: with softmax + cross-entropy and integer labels, the fused fast path once
    passed the mean probability of the true class instead of the mean loss."""
    net, X, y = _setup(setup)
    twin = copy.deepcopy(net)
    recorder = Recorder()
    net.fit(X, y, epochs=2, batch_size=4, optimizer=SGD(0.2), shuffle=False, callbacks=[recorder])
    _, _, batch_losses = _manual_sgd(twin, X, y, 0.2, 4, [np.arange(10)] * 2)
    reported = [loss for _, _, loss in recorder.batches()]
    np.testing.assert_allclose(reported, batch_losses, rtol=1e-12)


def test_integer_labels_and_one_hot_targets_train_identically():
    X, y = rings(120, np.random.default_rng(0))
    runs = []
    for targets in (y, np.eye(2)[y]):
        net = MLP([2, 6, 2], ["tanh", "softmax"], seed=4, dtype="float64")
        runs.append((net, net.fit(X, targets, epochs=3, batch_size=16, optimizer=SGD(0.3))))
    (net_a, history_a), (net_b, history_b) = runs
    for p, q in zip(net_a.weights, net_b.weights, strict=True):
        assert np.array_equal(p, q)
    assert history_a["accuracy"] == history_b["accuracy"]
    np.testing.assert_allclose(history_a["loss"], history_b["loss"], rtol=1e-12)


def test_fit_does_not_modify_its_inputs():
    X, y = _blobs(10)
    X_before, y_before = X.copy(), y.copy()
    net = MLP([4, 5, 3], ["linear", "softmax"], seed=0, dtype="float64")
    for shuffle in (False, True):
        net.fit(X, y, epochs=2, batch_size=4, shuffle=shuffle, validation=(X, y))
        np.testing.assert_array_equal(X, X_before)
        np.testing.assert_array_equal(y, y_before)


# ------------------------------------------------------------------------------- history
def test_history_keys_and_lengths():
    X, y = _blobs(10)
    history = MLP([4, 5, 3], seed=0).fit(X, y, epochs=3, batch_size=4)
    assert set(history) == {"epoch", "loss", "accuracy", "seconds"}
    assert history["epoch"] == [1, 2, 3]
    assert all(len(values) == 3 for values in history.values())
    assert all(0.0 <= a <= 1.0 for a in history["accuracy"])
    assert all(s >= 0.0 for s in history["seconds"])


def test_full_batch_history_loss_is_the_loss_before_the_step():
    X, y = _blobs(10)
    net = MLP([4, 5, 3], seed=0, dtype="float64")
    before = net.loss(X, y)
    history = net.fit(X, y, epochs=1, batch_size=10, optimizer=SGD(0.5))
    assert math.isclose(history["loss"][0], before, rel_tol=1e-12)
    assert net.loss(X, y) < before


def test_validation_history_matches_the_trained_network():
    X, y = _blobs(20)
    X_val, y_val = _blobs(8, seed=1)
    net = MLP([4, 5, 3], seed=0, dtype="float64")
    recorder = Recorder()
    history = net.fit(X, y, epochs=2, batch_size=4, validation=(X_val, y_val), callbacks=[recorder])
    assert set(history) == {"epoch", "loss", "accuracy", "seconds", "val_loss", "val_accuracy"}
    assert all(len(values) == 2 for values in history.values())
    assert math.isclose(history["val_loss"][-1], net.loss(X_val, y_val), rel_tol=1e-12)
    assert history["val_accuracy"][-1] == np.mean(net.predict(X_val) == y_val)
    # The callbacks see the same rows, and the same history at the end.
    logs = [c[2] for c in recorder.calls if c[0] == "epoch_end"]
    assert [row["val_loss"] for row in logs] == history["val_loss"]
    assert recorder.history is history or recorder.history == history


def test_single_output_network_accuracy_uses_the_half_threshold():
    """A single sigmoid unit: predict, accuracy and val_accuracy all decide by output > 0.5."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    Y = (X[:, :1] + 0.3 * X[:, 1:] > 0).astype(float)  # (n, 1) targets in {0, 1}
    net = MLP([2, 1], ["sigmoid"], loss="sse", seed=0, dtype="float64")
    initial_predictions = net.predict(X)
    assert set(np.unique(initial_predictions)) <= {0, 1}
    history = net.fit(
        X, Y, epochs=1, batch_size=40, optimizer=SGD(0.1), shuffle=False, validation=(X, Y)
    )
    # One full batch: the running accuracy is that of the weights before the step.
    assert history["accuracy"][0] == np.mean(initial_predictions == Y[:, 0])
    assert history["val_accuracy"][0] == np.mean(net.predict(X) == Y[:, 0])
    assert history["accuracy"][0] < 1.0  # not trivially "always class 0"


# ------------------------------------------------------------------------------- stopping
class StopAt(Callback):
    def __init__(self, epoch: int):
        self.stop_epoch, self.model, self.epochs_seen, self.ended = epoch, None, [], 0

    def on_train_begin(self, model, info):
        self.model = model

    def on_epoch_end(self, epoch, logs):
        self.epochs_seen.append(epoch)
        if epoch == self.stop_epoch:
            self.model.stop_training = True

    def on_train_end(self, history):
        self.ended += 1


def test_stop_training_ends_after_that_epoch():
    X, y = _blobs(10)
    net = MLP([4, 5, 3], seed=0)
    stopper = StopAt(2)
    history = net.fit(X, y, epochs=10, batch_size=4, callbacks=[stopper])
    assert history["epoch"] == [1, 2]
    assert stopper.epochs_seen == [1, 2]
    assert stopper.ended == 1
    # The flag does not stick: the next fit runs all its epochs.
    assert net.fit(X, y, epochs=3, batch_size=4)["epoch"] == [1, 2, 3]


# ------------------------------------------------------------------------------- divergence
def _diverging_run():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)) * 1000.0  # unscaled inputs
    y = rng.integers(0, 3, 64)
    net = MLP([4, 16, 16, 3], ["relu", "relu", "softmax"], seed=1)  # float32
    return net, X, y


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_raises_with_epoch_and_step():
    net, X, y = _diverging_run()
    recorder = Recorder()
    with pytest.raises(mlp.DivergenceError) as info:
        net.fit(X, y, epochs=5, batch_size=8, optimizer=SGD(1e5), callbacks=[recorder])
    error = info.value
    assert isinstance(error, FloatingPointError)
    completed = recorder.batches()
    assert (error.epoch, error.step) == (
        (completed[-1][0], completed[-1][1] + 1) if completed else (1, 1)
    )
    assert error.steps_per_epoch == 8
    assert 1 <= error.step <= 8
    assert not math.isfinite(error.loss)
    message = str(error)
    assert f"epoch {error.epoch}" in message
    assert f"step {error.step}" in message
    assert ("train_end",) not in recorder.calls


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_with_sse_loss():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)) * 1000.0
    y = rng.normal(size=(64, 3))
    net = MLP([4, 16, 16, 3], ["relu", "relu", "linear"], loss="sse", seed=1)
    with pytest.raises(mlp.DivergenceError, match=r"epoch \d+, step \d+"):
        net.fit(X, y, epochs=5, batch_size=8, optimizer=SGD(1e5))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_error_survives_pickling():
    """Parallel sweeps (joblib/loky) send a worker's exception back pickled."""
    net, X, y = _diverging_run()
    with pytest.raises(mlp.DivergenceError) as info:
        net.fit(X, y, epochs=5, batch_size=8, optimizer=SGD(1e5))
    copy_ = pickle.loads(pickle.dumps(info.value))
    assert (copy_.epoch, copy_.step) == (info.value.epoch, info.value.step)
    assert str(copy_) == str(info.value)


def _blow_up_data():
    rng = np.random.default_rng(0)
    return rng.random((640, 784)).astype(np.float32), rng.integers(0, 10, 640)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("learning_rate", [1e3, 1e4, 1e5])
def test_a_network_that_blew_up_with_a_finite_clipped_loss_is_diverged(dtype, learning_rate):
    """ReLU at a huge learning rate: the weights explode while softmax + the clipped
    cross-entropy keep the loss finite; that is divergence too, not a finished run."""
    X, y = _blow_up_data()
    net = MLP([784, 32, 16, 10], ["relu", "relu", "softmax"], init="he_normal", seed=0, dtype=dtype)
    recorder = Recorder()
    with pytest.raises(mlp.DivergenceError) as info:
        net.fit(X, y, epochs=5, batch_size=32, optimizer=SGD(learning_rate), callbacks=[recorder])
    error = info.value
    assert ("train_end",) not in recorder.calls
    assert error.epoch == 1 and 1 <= error.step <= error.steps_per_epoch == 20
    assert "diverged" in str(error) and f"epoch {error.epoch}" in str(error)
    if math.isfinite(error.loss):  # caught by the weights, not the loss
        assert re.search(r"the (weights|activations) reached \S+ \(beyond", error.reason)
    copy_ = pickle.loads(pickle.dumps(error))
    assert (copy_.reason, str(copy_)) == (error.reason, str(error))


def test_the_blow_up_is_caught_by_the_weights_while_the_loss_is_still_finite():
    X, y = _blow_up_data()
    net = MLP([784, 32, 16, 10], ["relu", "relu", "softmax"], init="he_normal", seed=0)
    with pytest.raises(mlp.DivergenceError) as info:
        net.fit(X, y, epochs=5, batch_size=32, optimizer=SGD(1e3))
    assert math.isfinite(info.value.loss)
    limit = mlp.network.overflow_limit("float32")
    assert limit == 2.0**23 and mlp.network.overflow_limit("float64") == 2.0**52
    assert max(float(np.abs(W).max()) for W in net.weights) > limit
    assert f"beyond {limit:.3g}" in info.value.reason


def test_weights_that_are_large_but_below_the_limit_train_on():
    """The check is no cap on ordinary training: a sane run never comes near it."""
    X, y = _blow_up_data()
    net = MLP([784, 32, 16, 10], ["relu", "relu", "softmax"], init="he_normal", seed=0)
    for W in net.weights:
        W *= 100.0
    history = net.fit(X, y, epochs=2, batch_size=32, optimizer=SGD(1e-4))
    assert history["epoch"] == [1, 2]
