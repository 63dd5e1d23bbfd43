"""A training step in fixed parts of the batch, computed by one or more threads.

``MLP.fit(batch_parts=P)`` computes each step's gradient as the sum of the gradients of ``P``
fixed row blocks of the batch (:func:`part_bounds`), added in block order. Which thread computes
a block does not change a bit of it, so the weights depend on ``P`` but not on how many threads
(``workers``) shared the blocks: one core or several, a quiet machine or a busy one.

Why not let the BLAS library split each product over threads instead? Its results depend in the
last bits on its thread count, and a product split over threads waits at its end for the slowest
of them: on a machine doing other work, a thread that lost its core costs a scheduler slice at
every product, tens of thousands of times an epoch. Here each product runs on one BLAS thread,
and the blocks are claimed by whichever thread is free first (:class:`PartRunner`): a helper
that has not woken up, or lost its core, leaves its block to the calling thread.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import numpy as np


def part_bounds(rows: int, parts: int) -> list[int]:
    """Where the ``parts`` blocks of ``rows`` rows start and end: ``parts + 1`` edges, block ``i``
    is ``edges[i]:edges[i + 1]``; sizes differ by at most one. More parts than rows: one block
    per row."""
    parts = max(1, min(parts, rows))
    return [rows * k // parts for k in range(parts + 1)]


class PartRunner:
    """Runs the independent parts of a job on the calling thread and ``workers - 1`` helper
    threads; every part is computed exactly once, by whichever thread claims it first.

    Use it as a context manager (or call :meth:`close`): the helpers are stopped at the end.
    """

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._wake = threading.Condition()
        self._posted = 0
        self._job: tuple | None = None
        self._closed = False
        self._helpers = [
            threading.Thread(target=self._serve, name=f"mlp-part-{k}", daemon=True)
            for k in range(1, workers)
        ]
        for helper in self._helpers:
            helper.start()

    def run(self, compute: Callable[[int], object], parts: int) -> list[object]:
        """``[compute(0), ..., compute(parts - 1)]``, computed by the threads that are free, each
        under the caller's floating-point error state (``np.errstate``, which is per thread). An
        exception raised by a part is raised here (the first part's, in part order), after every
        part has ended."""
        if not self._helpers or parts == 1:
            return [compute(i) for i in range(parts)]
        results: list[object] = [None] * parts
        failures: list[BaseException | None] = [None] * parts
        done = [threading.Event() for _ in range(parts)]
        job = (compute, itertools.count(), results, failures, done, np.geterr())
        with self._wake:
            self._job = job
            self._posted += 1
            self._wake.notify_all()
        self._claim(job)
        for event in done:
            event.wait()
        for failure in failures:
            if failure is not None:
                raise failure
        return results

    @staticmethod
    def _claim(job: tuple) -> None:
        compute, claims, results, failures, done, _ = job
        while (i := next(claims)) < len(results):  # next() on a count is atomic
            try:
                results[i] = compute(i)
            except BaseException as exc:  # handed to the caller of run()
                failures[i] = exc
            finally:
                done[i].set()

    def _serve(self) -> None:
        seen = 0
        while True:
            with self._wake:
                while self._posted == seen and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                seen, job = self._posted, self._job
            with np.errstate(**job[-1]):
                self._claim(job)

    def close(self) -> None:
        """Stop the helper threads (each after the part it is computing, if any)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        for helper in self._helpers:
            helper.join()
        self._helpers = []

    def __enter__(self) -> PartRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
