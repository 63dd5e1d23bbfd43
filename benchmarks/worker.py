"""One measurement in a fresh process: ``python -m benchmarks.worker SPEC.json RESULT.json``.

The benchmark (:mod:`benchmarks.bench`) starts one of these per measured run, so that no run
inherits another's thread pools, caches or allocator state, and TensorFlow and PyTorch never share
a process. ``SPEC.json`` says what to do:

* ``{"kind": "train", "implementation": ..., "config": {...}, "data": folder, "seed": ...,
  "threads": ...}``: load the arrays, train, and report the training seconds, test top-1
  accuracy and peak resident memory (before training and overall);
* ``{"kind": "sgemm", "sizes": [...], "repeats": ..., "threads": ...}``: the machine's float32
  matrix-product peak as NumPy reaches it (:func:`sgemm_peak`).

NumPy's BLAS (and any OpenMP pool) is limited to ``threads`` with threadpoolctl for the whole run;
the parent also sets ``OMP_NUM_THREADS`` and the BLAS variables before the process starts.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from benchmarks.configs import BenchConfig
from benchmarks.data import load_arrays
from benchmarks.peers import IMPLEMENTATIONS


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sgemm_peak(sizes: list[int], repeats: int) -> dict:
    """Best float32 ``C = A @ B`` rate over square sizes ``n``: ``2 n^3`` FLOPs, the fastest of
    ``repeats`` timed products after one warm-up; GFLOP/s."""
    rng = np.random.default_rng(0)
    by_size = {}
    for n in sizes:
        A = rng.random((n, n), dtype=np.float32)
        B = rng.random((n, n), dtype=np.float32)
        C = np.empty((n, n), np.float32)
        np.matmul(A, B, out=C)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(A, B, out=C)
            best = min(best, time.perf_counter() - start)
        by_size[str(n)] = 2 * n**3 / best / 1e9
    return {"gflops": max(by_size.values()), "gflops_by_size": by_size}


def blas_info() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries (without file paths)."""
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer")
    return [{k: pool.get(k) for k in keep if k in pool} for pool in threadpool_info()]


def config_from_dict(d: dict) -> BenchConfig:
    d = dict(d)
    d["layer_sizes"] = tuple(d["layer_sizes"])
    d["activations"] = tuple(d["activations"])
    return BenchConfig(**d)


def run(spec: dict) -> dict:
    threads = int(spec["threads"])
    with threadpool_limits(limits=threads):
        if spec["kind"] == "sgemm":
            result = sgemm_peak(list(spec["sizes"]), int(spec["repeats"]))
            result["blas"] = blas_info()
            return result
        cfg = config_from_dict(spec["config"])
        implementation = IMPLEMENTATIONS[spec["implementation"]]
        data = load_arrays(Path(spec["data"]))
        before = peak_rss_mb()
        trained = implementation.train(cfg, data, int(spec["seed"]), threads)
        return {
            "seconds": trained.seconds,
            "test_top1_accuracy": trained.test_top1_accuracy,
            "peak_rss_mb": peak_rss_mb(),
            "peak_rss_after_loading_mb": before,
            "n_train": int(data["X_train"].shape[0]),
        }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m benchmarks.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    result = run(spec)
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
