"""Speed benchmark: the library's ``MLP.fit`` against a bare hand-written NumPy loop.

``python -m benchmarks.bench`` (or ``make bench``) trains the reference configuration (784-32-16-10,
tanh, softmax, cross-entropy, SGD 0.1, batch 32, 5 epochs, float32) on all 60,000 MNIST training
images with both, alternately (ABBA order, so drift hits both alike), from the same initial weights
and the same batch order, and reports median training seconds, samples per second, the time ratio
library / bare (target <= 1.1) and the test top-1 accuracy each reached (target >= 0.955).

MNIST comes from ``data/raw`` (after ``dvc repro download``) or the ``MNIST_MIRROR`` directory.
Results go to stdout as a Markdown table and to ``reports/benchmark_bare.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.bare_loop import train_bare
from mlp import MLP, SGD, metrics
from pipeline.common import write_json
from pipeline.idx import read_images, read_labels

FILES = {
    "X_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "X_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def find_mnist() -> Path:
    candidates = [Path("data/raw")]
    if os.environ.get("MNIST_MIRROR"):
        candidates.insert(0, Path(os.environ["MNIST_MIRROR"]))
    for folder in candidates:
        if all((folder / name).exists() for name in FILES.values()):
            return folder
    raise SystemExit(
        "MNIST not found: run `dvc repro download` or set MNIST_MIRROR to a folder with the "
        "four .gz files"
    )


def load_mnist(folder: Path) -> dict[str, np.ndarray]:
    data = {}
    for key, name in FILES.items():
        if key.startswith("X"):
            data[key] = (read_images(folder / name).reshape(-1, 784) / np.float32(255)).astype(
                np.float32
            )
        else:
            data[key] = read_labels(folder / name).astype(np.intp)
    return data


def reference_net(seed: int) -> MLP:
    return MLP([784, 32, 16, 10], ["tanh", "tanh", "softmax"], seed=seed, dtype="float32")


def run_library(data, seed, epochs, batch_size, lr) -> tuple[float, float]:
    net = reference_net(seed)
    start = time.perf_counter()
    net.fit(data["X_train"], data["y_train"], epochs, batch_size, SGD(lr))
    seconds = time.perf_counter() - start
    return seconds, metrics.top1_accuracy(data["y_test"], net.predict(data["X_test"]))


def run_bare(data, seed, epochs, batch_size, lr) -> tuple[float, float]:
    net = reference_net(seed)  # same initial weights; net.rng then gives the same batch order
    start = time.perf_counter()
    train_bare(
        data["X_train"],
        data["y_train"],
        net.weights,
        net.biases,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        rng=net.rng,
    )
    seconds = time.perf_counter() - start
    return seconds, metrics.top1_accuracy(data["y_test"], net.predict(data["X_test"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="pairs of runs (default 5)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmark_bare.json"))
    args = parser.parse_args(argv)

    data = load_mnist(find_mnist())
    n = len(data["y_train"])
    runners = {"library": run_library, "bare": run_bare}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    setting = (args.seed, args.epochs, args.batch_size, args.learning_rate)
    run_library(data, *setting)  # warm-up: page in the data, start the BLAS threads
    for repeat in range(args.repeats):
        order = ["library", "bare"] if repeat % 2 == 0 else ["bare", "library"]
        for name in order:
            results[name].append(runners[name](data, *setting))
            print(f"  {name:8s} run {repeat + 1}: {results[name][-1][0]:.3f} s", flush=True)

    ratios = [lib[0] / bare[0] for lib, bare in zip(results["library"], results["bare"])]
    summary = {
        name: {
            "median_seconds": statistics.median(s for s, _ in runs),
            "samples_per_second": args.epochs * n / statistics.median(s for s, _ in runs),
            "test_top1_accuracy": statistics.median(a for _, a in runs),
            "seconds": [s for s, _ in runs],
        }
        for name, runs in results.items()
    }
    report = {
        "configuration": {
            "layers": [784, 32, 16, 10],
            "activations": ["tanh", "tanh", "softmax"],
            "loss": "cross_entropy",
            "optimizer": f"SGD({args.learning_rate})",
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "train_images": n,
            "dtype": "float32",
        },
        "results": summary,
        "median_ratio_library_over_bare": statistics.median(ratios),
        "targets": {"ratio_at_most": 1.1, "test_top1_accuracy_at_least": 0.955},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }
    write_json(args.out, report)

    print("\n| implementation | median s | samples/s | test top-1 |")
    print("|---|---|---|---|")
    for name, row in summary.items():
        print(
            f"| {name} | {row['median_seconds']:.3f} | {row['samples_per_second']:,.0f} | "
            f"{row['test_top1_accuracy']:.4f} |"
        )
    ratio = report["median_ratio_library_over_bare"]
    print(f"\nmedian time ratio library / bare loop: {ratio:.3f} (target <= 1.1)")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(None))
