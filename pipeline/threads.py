"""How many BLAS threads a training uses: the thread policy behind ``train.blas_threads: auto``.

A training step of an MLP is a handful of matrix products per layer (forward, weight gradient,
error sent back), each ``(batch, n_in) @ (n_in, n_out)`` or its transpose: ``2 * batch * n_in *
n_out`` floating-point operations. A product split over several BLAS threads waits, at its end,
for the slowest of them. On a quiet machine that wait is a few microseconds; on a machine doing
other work a thread that lost its core waits a whole scheduler slice, and a small network pays
it tens of thousands of times per epoch (the reference configuration took 3 to 30 times as long
on two threads as on one while other processes ran, a mid-size one up to 30 times). A product is
worth another thread only when each thread gets enough work to hide that wait.

:func:`choose_threads` is that rule, and nothing else: a pure function of the layer sizes, the
batch size and the cores the process may use. It deliberately does not look at the machine's
load: the BLAS library's results depend (in the last bits) on how many threads computed a
product, so a count that followed the load would make the same seed and config give different
weights from one run to the next. The count depends only on the configuration and the machine,
and every run records the count it used (MLflow tag ``blas.threads``).

:func:`resolve_threads` applies ``train.blas_threads``: ``auto`` (the rule), an integer (that
count, forced), or ``None`` (no limit: the BLAS library's own default). Under ``auto`` a limit
already in force in the process (a sweep worker started with ``OMP_NUM_THREADS`` and the like set
to ``cores // n_jobs``, or ``OPENBLAS_NUM_THREADS`` set by the user) stays an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from pipeline.machine import available_cores

#: ``train.blas_threads`` value that asks for :func:`choose_threads`.
AUTO = "auto"

#: Floating-point operations of the largest matrix product of a step that each BLAS thread must
#: get before another thread is used: about a scheduler slice of work (1-3 ms at 50-100 GFLOP/s
#: per core). A product split over threads waits at its end for the slowest of them; on a busy
#: machine that is a thread that lost its core, for up to a slice, at every product. Work of a
#: slice or more per thread hides that wait; less does not: (b) of ``make bench`` (784-256-128-10
#: at batch 128, 51 MFLOP) ran 1.36 times faster quiet on two threads than on one, but 1.9 times
#: slower beside one busy process and up to 30 times beside two; (c) (537 MFLOP) ran 1.75 times
#: faster quiet and 1.5 to 1.7 times slower loaded. The reference network at batch 32
#: (1.6 MFLOP) is far below.
FLOPS_PER_THREAD = 128_000_000


def largest_product_flops(layer_sizes: Sequence[int], batch_size: int) -> int:
    """Floating-point operations of the largest matrix product of one training step:
    ``2 * batch_size * n_in * n_out`` of the widest layer (input size first in ``layer_sizes``)."""
    if len(layer_sizes) < 2:
        raise ValueError(f"need at least two layer sizes, got {list(layer_sizes)}")
    if batch_size < 1 or any(n < 1 for n in layer_sizes):
        raise ValueError(f"sizes must be >= 1: layers {list(layer_sizes)}, batch {batch_size}")
    return 2 * batch_size * max(n_in * n_out for n_in, n_out in pairwise(layer_sizes))


def choose_threads(layer_sizes: Sequence[int], batch_size: int, cores: int) -> int:
    """The BLAS threads for training a network of ``layer_sizes`` on batches of ``batch_size`` on
    ``cores`` cores: one thread per :data:`FLOPS_PER_THREAD` of the largest product, at least 1
    and at most ``cores``. Depends on nothing else (not on the machine's load)."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    work = largest_product_flops(layer_sizes, batch_size)
    return max(1, min(cores, work // FLOPS_PER_THREAD))


def blas_pool_size() -> int | None:
    """The threads the loaded BLAS libraries would use now (the largest pool), ``None`` when no
    BLAS library is loaded or threadpoolctl cannot see it."""
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def resolve_threads(
    configured: int | str | None, layer_sizes: Sequence[int], batch_size: int
) -> int | None:
    """The BLAS threads a training with ``train.blas_threads = configured`` uses in this process.

    ``auto``: :func:`choose_threads` on this process's cores, capped by the BLAS pool in force
    (a sweep worker's per-process limit); an integer: that count; ``None``: the pool in force
    (the library's default), or ``None`` when no BLAS library is visible.
    """
    if configured is None:
        return blas_pool_size()
    if configured == AUTO:
        chosen = choose_threads(layer_sizes, batch_size, available_cores())
        pool = blas_pool_size()
        return min(chosen, pool) if pool else chosen
    return int(configured)
