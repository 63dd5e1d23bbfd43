"""A step in fixed blocks of the batch (``MLP.fit(batch_parts=..., workers=...)``,
:mod:`mlp.parallel`): the blocks' gradients add up to the batch's, and the weights depend on the
blocks but not on how many threads computed them."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mlp import MLP, SGD, Adam, DivergenceError
from mlp.parallel import PartRunner, part_bounds

N = 64 * 7 + 1  # the last batch of 64 has one row: one block, whatever batch_parts says


def _data(n: int = N, features: int = 30):
    rng = np.random.default_rng(5)
    X = rng.random((n, features), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return X, y


def _trained(batch_parts: int = 1, workers: int = 1, epochs: int = 2, **options):
    X, y = _data()
    sizes = options.pop("sizes", [30, 24, 16, 10])
    activations = options.pop("activations", ["relu", "tanh", "softmax"])
    loss = options.pop("loss", "cross_entropy")
    targets = np.eye(10, dtype=np.float32)[y] if options.pop("dense", False) else y
    net = MLP(sizes, activations, loss=loss, init="he_normal", seed=3)
    optimizer = options.pop("optimizer", lambda: SGD(0.1))()
    with threadpool_limits(1, user_api="blas"):
        history = net.fit(
            X,
            targets,
            epochs=epochs,
            batch_size=64,
            optimizer=optimizer,
            validation=(X[:50], y[:50]),
            batch_parts=batch_parts,
            workers=workers,
            **options,
        )
    return net, history


def _same(a, b) -> bool:
    (net_a, hist_a), (net_b, hist_b) = a, b
    params = zip(net_a.weights + net_a.biases, net_b.weights + net_b.biases, strict=True)
    return all(np.array_equal(p, q) for p, q in params) and all(
        hist_a[key] == hist_b[key] for key in ("loss", "accuracy", "val_loss", "val_accuracy")
    )


SCENES = {
    "softmax + cross-entropy": {},
    "dense targets": {"dense": True},
    "sse + sigmoid": {"loss": "sse", "activations": ["relu", "tanh", "sigmoid"]},
    "dropout + max-norm": {"dropout": 0.3, "input_dropout": 0.2, "max_norm": 1.5},
    "adam": {"optimizer": lambda: Adam(0.01)},
}


@pytest.mark.parametrize("scene", sorted(SCENES))
@pytest.mark.parametrize("parts", [2, 3])
def test_the_weights_do_not_depend_on_the_threads_that_computed_the_blocks(scene, parts):
    alone = _trained(parts, workers=1, **SCENES[scene])
    for workers in (2, 3):
        assert _same(_trained(parts, workers=workers, **SCENES[scene]), alone), workers


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_the_blocks_gradients_add_up_to_the_batchs_gradient(scene):
    """One step in two blocks moves the weights as the whole batch does, to rounding (a mean over
    each block instead of the batch would halve the step; a lost block would change it more)."""
    options = dict(SCENES[scene], epochs=1)
    whole, _ = _trained(1, **options)
    blocks, _ = _trained(2, workers=2, **options)
    for w, v in zip(whole.weights + whole.biases, blocks.weights + blocks.biases, strict=True):
        assert not np.array_equal(w, v) or w.ndim == 1  # the order of the sums differs
        np.testing.assert_allclose(v, w, rtol=2e-4, atol=2e-5)


def test_one_block_is_the_whole_batch_bit_for_bit():
    assert _same(_trained(1, workers=1), _trained(1, workers=4))
    # more blocks than rows: one row per block
    assert part_bounds(3, 8) == [0, 1, 2, 3]
    assert part_bounds(64, 2) == [0, 32, 64]
    assert part_bounds(65, 2) == [0, 32, 65]


def test_a_divergence_found_by_a_helper_thread_is_raised_by_fit_without_warnings():
    X, y = _data()
    net = MLP([30, 24, 10], ["relu", "softmax"], init="he_normal", seed=0)
    X = X * 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning from any thread would fail here
        with pytest.raises(DivergenceError) as error:
            net.fit(X, y, epochs=3, batch_size=64, optimizer=SGD(10.0), batch_parts=2, workers=2)
    assert error.value.epoch == 1


def test_fit_leaves_no_threads_behind():
    before = {t.name for t in threading.enumerate()}
    _trained(2, workers=2)
    assert not {t.name for t in threading.enumerate() if t.name.startswith("mlp-part")} - before


def test_bad_block_and_worker_counts_are_named():
    from mlp import ParameterError

    X, y = _data()
    net = MLP([30, 10], ["softmax"])
    for name, value in (("batch_parts", 0), ("workers", 0), ("batch_parts", 1.5)):
        with pytest.raises(ParameterError, match=name):
            net.fit(X, y, **{name: value})


def test_a_part_the_helper_is_slow_with_does_not_hold_up_the_others():
    """A helper that lost its core keeps only the block it took; the caller takes the rest."""
    computed_by = {}

    def part(i: int) -> int:
        if threading.current_thread().name != threading.main_thread().name:
            time.sleep(0.3)  # the helper lost its core
        else:
            time.sleep(0.02)
        computed_by[i] = threading.current_thread().name
        return i * i

    with PartRunner(workers=2) as runner:
        assert runner.run(part, 6) == [i * i for i in range(6)]
    helped = [i for i, name in computed_by.items() if name.startswith("mlp-part")]
    assert len(helped) <= 1  # the helper took one block at most; the caller did the others


def test_a_failing_part_is_raised_after_every_part_ended():
    ended = []

    def part(i: int) -> int:
        time.sleep(0.01 * i)
        ended.append(i)
        if i in (1, 2):
            raise ValueError(f"part {i}")
        return i

    with PartRunner(workers=2) as runner:
        with pytest.raises(ValueError, match="part 1"):
            runner.run(part, 4)
        assert sorted(ended) == [0, 1, 2, 3]
        assert runner.run(lambda i: i + 1, 3) == [1, 2, 3]  # still usable
