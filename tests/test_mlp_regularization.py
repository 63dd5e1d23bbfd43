"""Dropout, max-norm, learning-rate schedules and early stopping in ``MLP.fit``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mlp import (
    MLP,
    SGD,
    Adam,
    Callback,
    CosineDecay,
    EarlyStopping,
    ExponentialDecay,
    ParameterError,
    StepDecay,
)
from mlp import regularization as reg


def _data(n=120, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    y = (np.abs(X[:, 0] * 2 + X[:, 1]) * 1.3).astype(int) % classes
    return X, y


def _net(sizes=(6, 8, 7, 3), activation="tanh", seed=0, dtype="float64"):
    acts = [activation] * (len(sizes) - 2) + ["softmax"]
    return MLP(list(sizes), acts, seed=seed, dtype=dtype)


def _weights(net):
    return [a.copy() for a in (*net.weights, *net.biases)]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
@pytest.mark.parametrize("sizes", [(6, 3), (6, 8, 3), (6, 8, 7, 3), (6, 5, 8, 4, 3)])
def test_dropout_gradients_match_central_differences_for_a_fixed_mask(activation, sizes):
    X, y = _data(20)
    net = _net(sizes, activation)
    rng = np.random.default_rng(7)
    for b in net.biases:  # nonzero, so that no ReLU sits at its kink (a dropped row gives z = b)
        b[:] = rng.uniform(0.1, 0.3, b.shape)
    rates = [0.2] + [0.5] * (len(sizes) - 2)
    masks = reg.draw_masks(rng, rates, [(20, k) for k in sizes[:-1]], np.float64)
    dW, db = reg.masked_gradients(net, X, y, masks)
    h = 1e-6
    for params, grads in ((net.weights, dW), (net.biases, db)):
        for p, g in zip(params, grads, strict=True):
            numeric = np.empty_like(p)
            for i in np.ndindex(p.shape):
                old = p[i]
                p[i] = old + h
                up = reg.masked_loss(net, X, y, masks)
                p[i] = old - h
                down = reg.masked_loss(net, X, y, masks)
                p[i] = old
                numeric[i] = (up - down) / (2 * h)
            np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


def test_masks_drop_units_and_scale_the_kept_ones():
    masks = reg.draw_masks(np.random.default_rng(0), [0.0, 0.25], [(4000, 3), (4000, 50)], "f8")
    assert masks[0] is None
    values = set(np.unique(masks[1]))
    assert values == {0.0, 1 / 0.75}
    assert abs(np.mean(masks[1] == 0) - 0.25) < 0.01
    assert abs(masks[1].mean() - 1) < 0.01  # inverted: the expected value is unchanged


def test_a_dropout_step_is_the_masked_gradient_step_with_masks_from_the_networks_generator():
    X, y = _data(40)
    lr, rates = 0.3, [0.2, 0.5, 0.4]
    trained = _net()
    trained.fit(
        X,
        y,
        epochs=1,
        batch_size=40,
        optimizer=SGD(lr),
        shuffle=False,
        dropout=rates[1:],
        input_dropout=rates[0],
    )
    by_hand = _net()
    masks = reg.draw_masks(by_hand.rng, rates, [(40, 6), (40, 8), (40, 7)], np.float64)
    dW, db = reg.masked_gradients(by_hand, X, y, masks)
    for p, g in zip([*by_hand.weights, *by_hand.biases], [*dW, *db], strict=True):
        p -= lr * g
    for a, b in zip(_weights(trained), _weights(by_hand), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_dropout_is_off_outside_training_and_runs_are_reproducible():
    X, y = _data()
    runs = []
    for _ in range(2):
        net = _net(dtype="float32")
        history = net.fit(
            X,
            y,
            epochs=3,
            batch_size=16,
            optimizer=SGD(0.1),
            dropout=0.5,
            input_dropout=0.2,
            validation=(X, y),
        )
        runs.append((net, history))
    (net, history), (other, other_history) = runs
    assert _same(_weights(net), _weights(other))
    assert history["loss"] == other_history["loss"]
    state = net.rng.bit_generator.state
    first = net.forward(X)
    assert np.array_equal(first, net.forward(X))  # no masks: deterministic
    assert net.rng.bit_generator.state == state  # and no draws
    # validation used the whole network: the last val_loss is the loss of the final weights
    assert history["val_loss"][-1] == pytest.approx(net.loss(X, y), rel=1e-6)
    # while training, dropout did change the steps
    plain = _net(dtype="float32")
    plain.fit(X, y, epochs=3, batch_size=16, optimizer=SGD(0.1))
    assert not _same(_weights(plain), _weights(net))


def test_dropout_with_a_partial_last_batch_and_per_layer_rates():
    X, y = _data(50)
    net = _net()
    history = net.fit(X, y, epochs=2, batch_size=16, dropout=[0.0, 0.3], optimizer=SGD(0.1))
    assert all(math.isfinite(v) for v in history["loss"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"dropout": [0.1]}, r"dropout needs one rate per hidden layer \(2\)"),
        ({"dropout": "0.5"}, r"dropout must be a rate"),
        ({"input_dropout": 1.5}, r"input_dropout must be in \[0, 1\)"),
        ({"max_norm": 0}, r"max_norm must be a finite number > 0"),
        ({"early_stopping": EarlyStopping()}, r"early_stopping watches a validation metric"),
    ],
)
def test_bad_regularisation_arguments_are_refused(kwargs, message):
    X, y = _data()
    with pytest.raises(ValueError, match=message):
        _net().fit(X, y, **kwargs)


# ---------------------------------------------------------------------------- max-norm
def test_max_norm_scales_only_the_columns_that_are_too_long():
    W = np.array([[3.0, 0.1, 0.0], [4.0, 0.2, 0.0]])
    reg.max_norm([W], 2.0)
    np.testing.assert_allclose(W[:, 0], [1.2, 1.6])
    assert np.array_equal(W[:, 1:], [[0.1, 0.0], [0.2, 0.0]])


def test_fit_with_max_norm_keeps_every_incoming_weight_vector_within_the_limit():
    X, y = _data()
    free, constrained = _net(), _net()
    free.fit(X, y, epochs=5, batch_size=8, optimizer=SGD(0.5, momentum=0.9))
    constrained.fit(X, y, epochs=5, batch_size=8, optimizer=SGD(0.5, momentum=0.9), max_norm=1.0)
    assert max(np.linalg.norm(W, axis=0).max() for W in free.weights) > 1.0
    for W in constrained.weights:
        assert np.linalg.norm(W, axis=0).max() <= 1.0 + 1e-12


# ---------------------------------------------------------------------------- schedules
def test_schedule_factors():
    step = StepDecay(step_size=2, gamma=0.5)
    assert [step.factor(e, 6) for e in range(1, 7)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert [ExponentialDecay(0.5).factor(e, 3) for e in (1, 2, 3)] == [1, 0.5, 0.25]
    cosine = CosineDecay(warmup_epochs=2, final_fraction=0.1)
    factors = [cosine.factor(e, 6) for e in range(1, 7)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert factors[3] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert all(a > b for a, b in itertools.pairwise(factors[2:]))
    assert factors[-1] > 0.1
    assert CosineDecay().factor(1, 1) == 1.0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: StepDecay(0), "step_size must be an integer >= 1"),
        (lambda: StepDecay(2, gamma=1.0), r"gamma must be in \(0, 1\)"),
        (lambda: ExponentialDecay(0.0), r"gamma must be in \(0, 1\)"),
        (lambda: CosineDecay(-1), "warmup_epochs must be an integer >= 0"),
        (lambda: CosineDecay(final_fraction=1.0), r"final_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_schedule_arguments_are_refused(make, message):
    with pytest.raises(ParameterError, match=message):
        make()


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda: SGD(0.2), lambda: SGD(0.2, momentum=0.9), lambda: Adam(0.01)],
    ids=["sgd", "momentum", "adam"],
)
def test_a_schedule_sets_each_epochs_rate_for_any_optimiser(make_optimizer):
    X, y = _data()
    scheduled, optimizer = _net(), make_optimizer()
    history = scheduled.fit(
        X,
        y,
        epochs=3,
        batch_size=16,
        optimizer=optimizer,
        shuffle=False,
        schedule=StepDecay(1, 0.5),
    )
    base = make_optimizer().learning_rate
    assert history["learning_rate"] == [base, base * 0.5, base * 0.25]
    assert optimizer.learning_rate == base  # put back
    by_hand, optimizer = _net(), make_optimizer()
    for factor in (1, 0.5, 0.25):  # the same optimiser (its state goes on), one epoch at a time
        optimizer.learning_rate = base * factor
        by_hand.fit(X, y, epochs=1, batch_size=16, optimizer=optimizer, shuffle=False)
    assert _same(_weights(scheduled), _weights(by_hand))


def test_the_schedule_reaches_callbacks_and_the_history_only_when_given():
    X, y = _data()
    seen = []

    class Rates(Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append(logs.get("learning_rate"))

    history = _net().fit(
        X, y, epochs=2, optimizer=SGD(0.1), callbacks=[Rates()], schedule=ExponentialDecay(0.5)
    )
    assert seen == [0.1, 0.05] == history["learning_rate"]
    assert "learning_rate" not in _net().fit(X, y, epochs=1)


# ---------------------------------------------------------------------------- early stopping
def test_early_stopping_counts_patience_and_keeps_the_best_weights():
    stopper = EarlyStopping("val_accuracy", patience=3)
    stopper.begin()
    params = [np.zeros(2)]
    decisions = []
    for epoch, value in enumerate([0.5, 0.7, 0.6, 0.7, 0.65, 0.9], start=1):
        params[0][:] = epoch
        decisions.append(stopper.update(epoch, {"val_accuracy": value}, params))
    assert decisions == [False, False, False, False, True, False]
    history = {}
    stopper.end(params, history)
    # the sixth epoch was never asked for by fit; the best so far was epoch 6 here
    assert history == {"best_epoch": 6, "stopped_epoch": 6, "restored_best": True}
    assert params[0].tolist() == [6, 6]


def test_early_stopping_on_val_loss_with_min_delta():
    stopper = EarlyStopping("val_loss", patience=2, min_delta=0.1, restore_best=False)
    stopper.begin()
    p = [np.zeros(1)]
    assert not stopper.update(1, {"val_loss": 1.0}, p)
    assert not stopper.update(2, {"val_loss": 0.95}, p)  # not better by more than 0.1
    assert stopper.update(3, {"val_loss": 0.5 + 0.45}, p)
    history = {}
    stopper.end(p, history)
    assert history == {"best_epoch": 1, "stopped_epoch": 3, "restored_best": False}


def test_fit_stops_early_and_restores_the_best_epochs_weights():
    X, y = _data(200)
    X_val, _ = _data(200, seed=1)
    y_val = np.random.default_rng(3).integers(0, 3, 200)  # noise: accuracy wanders
    net = _net()
    history = net.fit(
        X,
        y,
        epochs=200,
        batch_size=16,
        optimizer=SGD(0.5, momentum=0.9),
        validation=(X_val, y_val),
        early_stopping=EarlyStopping("val_accuracy", patience=3),
    )
    epochs = len(history["epoch"])
    assert history["stopped_epoch"] == epochs < 200
    best = int(np.argmax(history["val_accuracy"])) + 1  # the first of equal maxima
    assert history["best_epoch"] == best
    assert epochs - best == 3
    assert history["restored_best"] is True
    out = net.forward(X_val)
    assert np.mean(out.argmax(axis=1) == y_val) == history["val_accuracy"][best - 1]
    assert net.loss(X_val, y_val) == history["val_loss"][best - 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"monitor": "accuracy"}, "monitor must be one of val_accuracy, val_loss"),
        ({"patience": 0}, "patience must be an integer >= 1"),
        ({"min_delta": -1}, "min_delta must be a finite number >= 0"),
    ],
)
def test_bad_early_stopping_arguments_are_refused(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        EarlyStopping(**kwargs)


def test_everything_off_is_the_plain_fit():
    X, y = _data()
    plain, explicit = _net(dtype="float32"), _net(dtype="float32")
    h1 = plain.fit(X, y, epochs=2, batch_size=16, optimizer=SGD(0.1))
    h2 = explicit.fit(
        X,
        y,
        epochs=2,
        batch_size=16,
        optimizer=SGD(0.1),
        schedule=None,
        dropout=0.0,
        input_dropout=0.0,
        max_norm=None,
        early_stopping=None,
    )
    assert _same(_weights(plain), _weights(explicit))
    assert h1.keys() == h2.keys() == {"epoch", "loss", "accuracy", "seconds"}
