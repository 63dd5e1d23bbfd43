"""Can a thread count follow the machine's load without changing the bits? A study, not a feature.

OpenBLAS's results depend in the last bits on how many threads computed a product, so the thread
policy (:mod:`pipeline.threads`) picks its count from the configuration alone. A count that
followed the load would need the work split in parts fixed by the configuration, so that only who
computes each part changes. This script trains a plain ReLU/softmax network (the same maths as
:mod:`mlp`, written out) one epoch in four ways and prints seconds and a digest of the weights:

- ``whole-1``, ``whole-2``: each product whole, OpenBLAS on one or two threads;
- ``rows``: every large product split in fixed row blocks, OpenBLAS on one thread, the blocks
  shared by this thread and a helper thread;
- ``halves``: the batch split in two fixed halves (forward and backward of each), the halves
  shared the same way, their gradients summed in a fixed order.

In ``rows`` and ``halves`` the calling thread never waits for a part the helper is slow with (it
lost its core) longer than half its own time: it computes that part again itself, and whichever
copy is done first is used; both are the same bits. ``--workers 1`` computes every part in the
calling thread: its digest must equal the two-worker one. With ``--busy N`` the script starts
``N`` busy processes first (as ``make bench`` does) and stops them at the end.

    python -m benchmarks.split_study --config b --busy 1
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.bench import busy_processes
from benchmarks.data import find_mnist, load_mnist

#: name: (layer sizes, batch size, training images) for one epoch; (b) and (c) of ``make bench``.
CONFIGS = {
    "b": ((784, 256, 128, 10), 128, 60_000),
    "c": ((784, 1024, 1024, 10), 256, 20_000),
}
MODES = ("whole-1", "whole-2", "rows", "halves")
#: A product is split in row blocks when it has at least this many floating-point operations.
ROWS_MIN_FLOPS = 8_000_000


class Sharer:
    """Runs ``parts`` independent parts of a job, each ``compute(i, private)`` returning or writing
    its result, on the calling thread and (with ``workers=2``) one helper thread."""

    def __init__(self, workers: int):
        self.workers = workers
        self.recomputed = 0
        self._wake = threading.Condition()
        self._posted = 0
        self._job: tuple | None = None
        if workers > 1:
            threading.Thread(target=self._helper, name="split-helper", daemon=True).start()

    def run(self, compute: Callable[[int, bool], object], parts: int) -> list[object]:
        """The results of ``compute(i, private)`` for ``i < parts``; ``private`` is True when the
        part must be computed into memory of its own (the helper, or a recomputation)."""
        if self.workers == 1:
            return [compute(i, False) for i in range(parts)]
        job = (
            compute,
            itertools.count(),
            [None] * parts,
            [threading.Event() for _ in range(parts)],
        )
        with self._wake:
            self._job = job
            self._posted += 1
            self._wake.notify()
        start = time.perf_counter()
        own = self._claim(job, private=False)
        mine = (time.perf_counter() - start) / max(own, 1)
        results, done = job[2], job[3]
        for i in range(parts):
            if results[i] is None and not done[i].wait(0.5 * mine + 1e-4):
                value = compute(i, True)
                if results[i] is None:
                    results[i] = value
                    self.recomputed += 1
        return results

    @staticmethod
    def _claim(job: tuple, private: bool) -> int:
        compute, claims, results, done = job
        count = 0
        while (i := next(claims)) < len(results):
            value = compute(i, private)
            if results[i] is None:
                results[i] = value
            done[i].set()
            count += 1
        return count

    def _helper(self) -> None:
        seen = 0
        while True:
            with self._wake:
                while self._posted == seen:
                    self._wake.wait()
                seen, job = self._posted, self._job
            self._claim(job, private=True)


def _bounds(n: int, parts: int) -> list[int]:
    return [n * k // parts for k in range(parts + 1)]


def product(a: np.ndarray, b: np.ndarray, sharer: Sharer | None, blocks: int = 2) -> np.ndarray:
    """``a @ b``; with a sharer and a large product, in ``blocks`` fixed row blocks."""
    if sharer is None or 2 * a.shape[0] * a.shape[1] * b.shape[1] < ROWS_MIN_FLOPS:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    edges = _bounds(a.shape[0], blocks)

    def block(i: int, private: bool) -> np.ndarray:
        rows = slice(edges[i], edges[i + 1])
        if private:  # the other thread may be writing this block of out: never touch it
            return a[rows] @ b
        np.matmul(a[rows], b, out=out[rows])
        return out[rows]

    for i, value in enumerate(sharer.run(block, blocks)):
        rows = slice(edges[i], edges[i + 1])
        if value is not None and not np.shares_memory(value, out):
            out[rows] = value
    return out


def _gradients(weights, biases, x, t, mul):
    """Forward and backward of one batch: the weight and bias gradients (sums over the rows)."""
    acts = [x]
    for layer, (W, b) in enumerate(zip(weights, biases)):
        z = mul(acts[-1], W)
        z += b
        if layer < len(weights) - 1:
            np.maximum(z, 0, out=z)
        else:
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
        acts.append(z)
    delta = acts[-1] - t
    grads = [None] * len(weights)
    for layer in range(len(weights) - 1, -1, -1):
        grads[layer] = (mul(acts[layer].T, delta), delta.sum(axis=0))
        if layer:
            delta = mul(delta, weights[layer].T)
            delta *= acts[layer] > 0
    return grads


def _half_of(weights, biases, x, t):
    """The gradients of half ``i`` of the batch ``x, t`` (fixed halves), as a part to share."""
    edges = _bounds(len(x), 2)

    def half(i: int, _private: bool):
        rows = slice(edges[i], edges[i + 1])
        return _gradients(weights, biases, x[rows], t[rows], np.matmul)

    return half


def train_epoch(
    X: np.ndarray, labels: np.ndarray, sizes: Sequence[int], batch: int, mode: str, workers: int
) -> tuple[float, str, int]:
    """One epoch of SGD (rate 0.05, seed 0); returns seconds, a weights digest, recomputed parts."""
    rng = np.random.default_rng(0)
    weights = [
        (rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in)).astype(np.float32)
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    biases = [np.zeros(n, np.float32) for n in sizes[1:]]
    targets = np.eye(sizes[-1], dtype=np.float32)[labels]
    threads = 2 if mode == "whole-2" else 1
    sharer = Sharer(workers) if mode in ("rows", "halves") else None
    order = rng.permutation(len(X))
    with threadpool_limits(threads, user_api="blas"):
        start = time.perf_counter()
        for lo in range(0, len(X), batch):
            rows = order[lo : lo + batch]
            x, t = X[rows], targets[rows]
            if mode == "halves":
                halves = sharer.run(_half_of(weights, biases, x, t), 2)
                grads = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(*halves)]
            else:
                grads = _gradients(weights, biases, x, t, lambda a, b: product(a, b, sharer))
            step = np.float32(0.05 / len(rows))
            for (W, b), (gW, gb) in zip(zip(weights, biases), grads):
                W -= step * gW
                b -= step * gb
        seconds = time.perf_counter() - start
    digest = hashlib.sha256(b"".join(W.tobytes() for W in weights)).hexdigest()[:12]
    return seconds, digest, sharer.recomputed if sharer else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIGS, default="b")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--workers", type=int, choices=(1, 2), default=2)
    parser.add_argument("--busy", type=int, default=0, help="busy processes to start first")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, help="train on this many images (default: config's)")
    args = parser.parse_args(argv)
    sizes, batch, images = CONFIGS[args.config]
    data = load_mnist(find_mnist())
    X, labels = data["X_train"][: args.images or images], data["y_train"][: args.images or images]
    with busy_processes(args.busy):
        for _ in range(args.repeats):
            for mode in args.modes:
                seconds, digest, again = train_epoch(X, labels, sizes, batch, mode, args.workers)
                print(
                    f"({args.config}) busy {args.busy} {mode:8s} {seconds:6.2f} s  "
                    f"weights {digest}  recomputed parts {again}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
