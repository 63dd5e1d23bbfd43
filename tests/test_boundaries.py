"""Rules tried exactly at their boundary, and loops tried past their first turn.

- A single output unit predicts class 1 only when its output is *above* 0.5: exactly 0.5 is
  class 0, in :meth:`mlp.MLP.predict` and in the accuracy ``fit`` records per epoch (two code
  paths that must agree).
- The download's back-off doubles after every failed attempt, not only after the first.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

from mlp import MLP, SGD
from pipeline.data import fetch

HALF_UP = float(np.nextafter(0.5, 1.0))


def _single_output(output_activation: str, bias: float) -> MLP:
    """A network whose one output is ``activation(bias)`` for every input (zero weights)."""
    net = MLP([3, 1], [output_activation], loss="sse", seed=0, dtype="float64")
    net.weights[0][...] = 0.0
    net.biases[0][...] = bias
    return net


@pytest.mark.parametrize(
    ("activation", "bias", "output"),
    [("sigmoid", 0.0, 0.5), ("linear", 0.5, 0.5), ("linear", HALF_UP, HALF_UP)],
)
def test_single_output_predicts_class_one_only_above_one_half(activation, bias, output):
    net = _single_output(activation, bias)
    X = np.zeros((4, 3))
    assert np.all(net.forward(X) == output)
    expected = 1 if output > 0.5 else 0
    assert net.predict(X).tolist() == [expected] * 4


@pytest.mark.parametrize(("bias", "predicted"), [(0.5, 0), (HALF_UP, 1)])
def test_fits_epoch_accuracy_uses_the_same_strict_rule(bias, predicted):
    """Targets all 1, then all 0: the epoch's accuracy counts the predictions of
    ``output > 0.5`` (the step is too small to move the output off its value)."""
    X = np.zeros((6, 3))
    for label in (0, 1):
        net = _single_output("linear", bias)
        y = np.full((6, 1), float(label))
        history = net.fit(X, y, epochs=1, batch_size=3, optimizer=SGD(1e-300), shuffle=False)
        assert np.all(net.forward(X) == bias)
        assert history["accuracy"] == [1.0 if label == predicted else 0.0]


def test_backoff_doubles_after_every_failed_attempt(caplog):
    """Five attempts against a port nobody listens on: four waits, each twice the one before."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits: list[float] = []
    caplog.set_level(logging.INFO, logger="pipeline")
    with pytest.raises(fetch._SourceFailed, match=r"connection refused \(after 5 attempts\)"):
        fetch._http_get(
            f"http://127.0.0.1:{port}/x.gz",
            io.BytesIO(),
            timeout=2.0,
            retries=5,
            backoff=0.25,
            label="x.gz",
            sleep=waits.append,
        )
    assert waits == [0.25, 0.5, 1.0, 2.0]
    assert [f"retrying in {w:g} s" in caplog.text for w in waits] == [True] * 4


def test_one_attempt_means_no_wait():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits: list[float] = []
    with pytest.raises(fetch._SourceFailed) as error:
        fetch._http_get(
            f"http://127.0.0.1:{port}/x.gz",
            io.BytesIO(),
            timeout=2.0,
            retries=1,
            backoff=5.0,
            label="x.gz",
            sleep=waits.append,
        )
    assert waits == [] and "attempts" not in str(error.value)
