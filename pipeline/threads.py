"""How a training uses the cores: the policy behind ``train.blas_threads`` and
``train.batch_parts`` (both ``auto`` by default).

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

Large networks trained on large batches use the cores another way (:func:`choose_parts`):
every batch is split in two fixed blocks of rows whose gradients are added in order
(:mod:`mlp.parallel`), each block's products on one BLAS thread, and two threads of the process
(``workers``) share the blocks, whichever is free taking the next. The weights depend on the
blocks, which follow from the configuration alone, and not on how many workers computed them, so
the worker count may follow the cores without changing a bit. A worker that lost its core to
another process leaves its block to the other. Measured with ``make bench`` (README, Speed) on
(b) and (c): within 1.18 times the best whole-batch thread count quiet and beside one busy
process, faster than either beside two, where whole batches on two BLAS threads lose 1.5 to 30
times beside busy processes and on one thread leave half a quiet machine idle.

:func:`resolve_plan` applies ``train.blas_threads`` (``auto``: the rules above; an integer: that
count, forced; ``None``: no limit, the BLAS library's own default) and ``train.batch_parts``
(``auto``: :func:`choose_parts`; an integer: that many blocks). A limit already in force in the
process (a sweep worker started with ``OMP_NUM_THREADS`` and the like set to ``cores // n_jobs``,
or ``OPENBLAS_NUM_THREADS`` set by the user) bounds the cores it uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


#: Blocks a batch is split in when it is split (:func:`choose_parts`): one per core of the two-core
#: machines this policy was measured on. More blocks cost more on fewer cores.
SPLIT_PARTS = 2

#: Rows each block must have. Smaller blocks make every product less efficient and the Python
#: work of a block a larger share of it: computed alone (one worker), two blocks cost 10-11 % more
#: than the whole batch at 64 and 128 rows per block ((b), (c)), 25 % at 32 (784-800-800-10 at
#: batch 64), 30-48 % at 16 (batch 32), more than a second core wins back.
PART_MIN_ROWS = 64

#: Floating-point operations of the largest product each block must get: two blocks of the
#: 784-128-64-10 network at batch 128 (13 MFLOP each) gain nothing on two cores.
PART_MIN_FLOPS = 16_000_000


@dataclass(frozen=True)
class Plan:
    """How a training computes: ``batch_parts`` blocks per batch (:mod:`mlp.parallel`), shared
    by ``workers`` threads, each using ``blas_threads`` BLAS threads (``None``: the library's
    default)."""

    blas_threads: int | None
    batch_parts: int
    workers: int

    @property
    def threads(self) -> int | None:
        """The threads computing at once (``None`` when the BLAS default is unknown)."""
        return None if self.blas_threads is None else self.workers * self.blas_threads


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


def choose_parts(layer_sizes: Sequence[int], batch_size: int) -> int:
    """The blocks each batch is split in: :data:`SPLIT_PARTS` when every block gets at least
    :data:`PART_MIN_ROWS` rows and :data:`PART_MIN_FLOPS` of the largest product, else 1 (the
    whole batch at once). Depends on the configuration alone, not on the machine: the weights'
    last bits depend on it."""
    work = largest_product_flops(layer_sizes, batch_size)
    if batch_size >= SPLIT_PARTS * PART_MIN_ROWS and work >= SPLIT_PARTS * PART_MIN_FLOPS:
        return SPLIT_PARTS
    return 1


def blas_pool_size() -> int | None:
    """The threads the loaded BLAS libraries would use now (the largest pool), ``None`` when no
    BLAS library is loaded or threadpoolctl cannot see it."""
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def resolve_plan(
    threads: int | str | None,
    parts: int | str,
    layer_sizes: Sequence[int],
    batch_size: int,
) -> Plan:
    """How a training with ``train.blas_threads = threads`` and ``train.batch_parts = parts``
    computes in this process.

    Blocks: ``auto``, :func:`choose_parts`; an integer, that many. BLAS threads: ``auto``, one
    when the batch is split, else :func:`choose_threads` on this process's cores, capped by the
    BLAS pool in force (a sweep worker's per-process limit); an integer, that count; ``None``,
    the pool in force (the library's default; ``None`` when no BLAS library is visible).
    Workers: as many as there are blocks and cores for them (the cores, capped by the pool in
    force, over the BLAS threads of each).
    """
    return make_plan(threads, parts, layer_sizes, batch_size, available_cores(), blas_pool_size())


def make_plan(
    threads: int | str | None,
    parts: int | str,
    layer_sizes: Sequence[int],
    batch_size: int,
    cores: int,
    pool: int | None = None,
) -> Plan:
    """:func:`resolve_plan` for a process with ``cores`` cores and a BLAS pool of ``pool``
    threads in force (``None``: unknown, no limit)."""
    batch_parts = choose_parts(layer_sizes, batch_size) if parts == AUTO else int(parts)
    cores = min(cores, pool) if pool else cores
    if threads is None:
        blas = pool
    elif threads == AUTO:
        blas = 1 if batch_parts > 1 else choose_threads(layer_sizes, batch_size, cores)
    else:
        blas = int(threads)
    workers = max(1, min(batch_parts, cores // (blas or cores)))
    return Plan(blas, batch_parts, workers)
