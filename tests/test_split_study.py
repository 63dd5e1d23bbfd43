"""The study behind the README's "a count that follows the load" paragraph
(``benchmarks/split_study.py``): its split ways of computing give the same bits whoever computes
each part, which is what would let a thread count follow the load."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from benchmarks import split_study


def _data(n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


@pytest.mark.parametrize("mode", ["rows", "halves"])
def test_a_split_epoch_gives_the_same_weights_on_one_or_two_workers(mode):
    X, y = _data()
    sizes = (784, 64, 32, 10)  # first products above ROWS_MIN_FLOPS at batch 128: split
    assert 2 * 128 * 784 * 64 >= split_study.ROWS_MIN_FLOPS
    _, alone, _ = split_study.train_epoch(X, y, sizes, 128, mode, workers=1)
    _, shared, _ = split_study.train_epoch(X, y, sizes, 128, mode, workers=2)
    assert alone == shared


def test_a_part_the_helper_is_slow_with_is_recomputed_with_the_same_result():
    sharer = split_study.Sharer(workers=2)
    a = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)

    def part(i: int, private: bool) -> np.ndarray:
        if threading.current_thread().name == "split-helper":
            time.sleep(0.5)  # the helper lost its core
        else:
            time.sleep(0.05)  # time enough for the helper to wake and claim a part
        return a[i * 16 : (i + 1) * 16].sum(axis=0)

    results = sharer.run(part, 4)
    assert sharer.recomputed >= 1
    expected = [a[i * 16 : (i + 1) * 16].sum(axis=0) for i in range(4)]
    assert all(np.array_equal(r, e) for r, e in zip(results, expected))


def test_a_split_product_equals_the_blocks_computed_one_by_one():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 784), dtype=np.float32)
    b = rng.standard_normal((784, 256), dtype=np.float32)
    out = split_study.product(a, b, split_study.Sharer(workers=2), blocks=2)
    assert np.array_equal(out[:128], a[:128] @ b)
    assert np.array_equal(out[128:], a[128:] @ b)
