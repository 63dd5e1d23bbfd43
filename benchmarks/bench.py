"""Speed benchmark: our MLP against Keras/TensorFlow, scikit-learn, PyTorch and a bare NumPy loop.

``python -m benchmarks.bench`` (``make bench``) trains three configurations on all 60,000 MNIST
training images and tests on the 10,000 test images:

  (a) reference      784-32-16-10 tanh, SGD 0.1, batch 32, 5 epochs
  (b) mid-size       784-256-128-10 relu, SGD 0.1, batch 128, 3 epochs
  (c) compute-bound  784-1024-1024-10 relu, SGD 0.05, batch 256, 2 epochs

with every implementation on the identical configuration (softmax + cross-entropy, plain SGD,
float32, the same initial weights, reshuffled every epoch; see benchmarks/peers.py for how each
peer is set up). Every run is a fresh process; the peers get --threads BLAS/framework threads
(default: every core), ours what the thread policy picks for the configuration on that many
cores (`train.blas_threads` and `train.batch_parts: auto`: whole batches on one BLAS thread, or
on the cores for very large products, or two blocks per batch shared by two threads), and, to
judge the policy, ours again on whole batches on one thread and on all of them. The order of
the implementations alternates between repeats (ABC, CBA, ...).

Contention: each configuration is measured quiet, then with 1 and with 2 busy background
processes (--loads) that the benchmark starts before and stops after that block of runs, each
a Python loop spinning on one core; the ratios compare implementations under the same load.

Reported per configuration, load and implementation: median training seconds, samples per
second, the median of peer time / our time, test top-1 accuracy, GFLOP/s of the matrix products
and peak resident memory; and the machine's float32 sgemm peak, measured with NumPy, to compare
(c) against.

Peers that are not installed (scikit-learn and PyTorch are the optional extra `bench`) are
skipped, saying so. Writes reports/benchmark.json and reports/benchmark.md, prints the table,
and logs an MLflow run (experiment "benchmark") unless --no-mlflow.

MNIST comes from $MNIST_MIRROR or data/raw (after `dvc repro download`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import data as bench_data
from benchmarks.configs import CONFIGS, BenchConfig, training_flops
from benchmarks.peers import IMPLEMENTATIONS, OURS_FIXED, PEERS, ours_plan, split_available
from benchmarks.report import check_targets, render_markdown, summarise
from pipeline.files import atomic_write, write_json
from pipeline.machine import available_cores

REPO = Path(__file__).resolve().parents[1]
#: What --quick changes (unless given explicitly): fewer images, one epoch, one repeat, quiet
#: and one busy process.
QUICK = {
    "n_train": 5000,
    "n_test": 1000,
    "epochs": 1,
    "repeats": 1,
    "sgemm_sizes": [256, 512],
    "loads": "0,1",
}
#: Busy background processes per block of runs, by default: quiet, one, two.
LOADS = "0,1,2"
#: A busy background process: one core's worth of pure Python, until its parent goes away.
BUSY_LOOP = """
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""
#: Seconds the busy processes get to start spinning before the runs begin.
BUSY_WARMUP = 1.0
SGEMM_SIZES = [1024, 2048, 3072]
SGEMM_REPEATS = 5
#: Environment variables that size thread pools when a library starts.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
VERSIONED = {
    "python": None,
    "numpy": ("numpy",),
    "threadpoolctl": ("threadpoolctl",),
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "keras": ("keras",),
    "scikit-learn": ("scikit-learn",),
    "torch": ("torch",),
}


class WorkerError(RuntimeError):
    """A measured run's process failed."""


# ---------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str | None]:
    """Versions of the libraries that shape the results, from package metadata (no imports)."""
    found: dict[str, str | None] = {}
    for key, distributions in VERSIONED.items():
        if distributions is None:
            found[key] = platform.python_version()
            continue
        found[key] = None
        for dist in distributions:
            try:
                found[key] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


# ---------------------------------------------------------------------------- one measurement
def worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``: user, nice,
    system, irq, softirq and steal time of all cores), or ``None`` where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(spec: dict, scratch: Path, timeout: float) -> dict:
    """Run :mod:`benchmarks.worker` on ``spec`` in a fresh Python process; its result.

    Adds ``other_cpu_load``: the cores that processes other than the worker kept busy on
    average while it ran (the machine's busy CPU time minus the worker's, over the wall time),
    a measure of how much the run was disturbed.
    """
    busy_before, ours_before = busy_cpu_seconds(), children_cpu_seconds()
    start = time.perf_counter()
    fd, spec_path = tempfile.mkstemp(suffix=".json", dir=scratch)
    with os.fdopen(fd, "w") as fh:
        json.dump(spec, fh)
    result_path = Path(spec_path).with_suffix(".result.json")
    try:
        process = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", spec_path, str(result_path)],
            cwd=REPO,
            env=worker_env(spec["threads"]),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if process.returncode != 0:
            tail = process.stderr.strip().splitlines()[-1:] or ["no output"]
            raise WorkerError(f"exit status {process.returncode}: {tail[0]}")
        result = json.loads(result_path.read_text())
        busy_after, wall = busy_cpu_seconds(), time.perf_counter() - start
        if busy_before is not None and busy_after is not None:
            others = (busy_after - busy_before) - (children_cpu_seconds() - ours_before)
            result["other_cpu_load"] = max(0.0, others / wall)
        return result
    except subprocess.TimeoutExpired:
        raise WorkerError(f"no result after {timeout:.0f} s") from None
    finally:
        Path(spec_path).unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` busy background processes (:data:`BUSY_LOOP`) for the duration of the block:
    started, given :data:`BUSY_WARMUP` seconds, and stopped at its end, also when it fails.
    Each also stops by itself when this process goes away (even killed)."""
    started: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            started.append(
                subprocess.Popen(
                    [sys.executable, "-c", BUSY_LOOP, str(os.getpid())],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        if started:
            time.sleep(BUSY_WARMUP)
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def thread_count(implementation: str, cfg: BenchConfig, threads: int) -> int:
    """The BLAS/framework threads of ``implementation`` on ``cfg`` with ``threads`` cores to use:
    the thread policy's for ``ours`` (its workers times the BLAS threads of each), 1 for
    ``ours-1``, ``threads`` for everyone else."""
    if implementation == "ours":
        return ours_plan(cfg, threads).threads
    if implementation == "ours-1":
        return 1
    return threads


def alternating(implementations: list[str], repeat: int) -> list[str]:
    """The order of repeat ``repeat`` (0-based): as given, then reversed, then as given, ..."""
    return list(implementations) if repeat % 2 == 0 else list(reversed(implementations))


# ---------------------------------------------------------------------------- the benchmark
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--configs", default="a,b,c", help="comma-separated configurations (default a,b,c)"
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers to compare with ours (default {','.join(PEERS)}); "
        "'none' for ours alone",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per implementation and config (default 3)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=available_cores(),
        help="BLAS/framework threads for every implementation (default: all cores, "
        f"{available_cores()})",
    )
    parser.add_argument(
        "--loads",
        default=None,
        help=f"comma-separated numbers of busy background processes to measure under "
        f"(default {LOADS}; --quick {QUICK['loads']}); 0 is the quiet machine",
    )
    parser.add_argument("--seed", type=int, default=0, help="initial weights and shuffling")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK['n_train']} training and {QUICK['n_test']} test images, "
        "1 epoch, 1 repeat, a small sgemm (not a measurement)",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="random MNIST-shaped images instead of MNIST (for tests; implies small data)",
    )
    parser.add_argument("--n-train", type=int, default=None, help="use the first N train images")
    parser.add_argument("--n-test", type=int, default=None, help="use the first N test images")
    parser.add_argument("--epochs", type=int, default=None, help="override every config's epochs")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where benchmark.json/.md go (default reports/, and reports/quick/ for --quick "
        "or --synthetic, so a smoke run never replaces the real table)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds before a run is abandoned"
    )
    parser.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        parser.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    args.peers = [] if peers == ["none"] else peers
    bad = [p for p in args.peers if p not in PEERS]
    if bad:
        parser.error(f"--peers: unknown {bad}; choose from {', '.join(PEERS)}")
    if args.quick:
        for key in ("n_train", "n_test", "epochs", "repeats", "loads"):
            if getattr(args, key) is None:
                setattr(args, key, QUICK[key])
    try:
        args.loads = sorted({int(n) for n in (args.loads or LOADS).split(",") if n.strip()})
    except ValueError:
        parser.error(f"--loads: expected numbers of busy processes like {LOADS}")
    if not args.loads or min(args.loads) < 0:
        parser.error(f"--loads: expected numbers >= 0 of busy processes like {LOADS}")
    if args.out_dir is None:
        args.out_dir = Path("reports/quick" if args.quick or args.synthetic else "reports")
    if args.repeats is None:
        args.repeats = 3
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def load_data(args: argparse.Namespace) -> dict:
    if args.synthetic:
        data = bench_data.synthetic(args.n_train or 600, args.n_test or 200, seed=args.seed)
    else:
        data = bench_data.load_mnist(bench_data.find_mnist())
    return bench_data.subset(data, args.n_train, args.n_test)


def measure(
    cfg: BenchConfig,
    implementations: list[str],
    args: argparse.Namespace,
    data_dir: Path,
    scratch: Path,
) -> list[dict]:
    """``args.repeats`` runs of each implementation on ``cfg``, in alternating order."""
    runs = []
    for repeat in range(args.repeats):
        for impl in alternating(implementations, repeat):
            threads = thread_count(impl, cfg, args.threads)
            spec = {
                "kind": "train",
                "implementation": impl,
                "config": cfg.as_dict(),
                "data": str(data_dir),
                "seed": args.seed,
                "threads": threads,
            }
            record = {"implementation": impl, "repeat": repeat, "threads": threads}
            try:
                record.update(run_worker(spec, scratch, args.timeout))
                print(
                    f"  {impl:8s} ({threads} thr) run {repeat + 1}: {record['seconds']:8.2f} s, "
                    f"test top-1 {record['test_top1_accuracy']:.4f}, "
                    f"peak RSS {record['peak_rss_mb']:,.0f} MiB, "
                    f"other processes {record.get('other_cpu_load', 0):.2f} cores",
                    flush=True,
                )
            except WorkerError as exc:
                record["error"] = str(exc)
                print(f"  {impl:8s} run {repeat + 1}: FAILED: {exc}", flush=True)
            runs.append(record)
    return runs


def run_benchmark(args: argparse.Namespace, data: dict, scratch: Path) -> dict:
    """Every measurement; the report (as written to benchmark.json)."""
    peers, skipped = split_available(args.peers)
    for peer, reason in skipped.items():
        print(f"skipping {peer}: {reason}", flush=True)
    data_dir = bench_data.save_arrays(data, scratch / "data")
    n_train, n_test = len(data["y_train"]), len(data["y_test"])
    sgemm_sizes = QUICK["sgemm_sizes"] if (args.quick or args.synthetic) else SGEMM_SIZES
    sgemm_spec = {
        "kind": "sgemm",
        "sizes": sgemm_sizes,
        "repeats": SGEMM_REPEATS,
        "threads": args.threads,
    }
    load_start = os.getloadavg()[0]
    if load_start > 0.5 * available_cores():
        print(
            f"warning: load average {load_start:.1f} on {available_cores()} cores: other "
            "processes are busy and the timings will be noisy",
            flush=True,
        )
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"sgemm peak ({args.threads} threads)...", flush=True)
    sgemm_runs = [run_worker(sgemm_spec, scratch, args.timeout)]
    print(f"  {sgemm_runs[0]['gflops']:.1f} GFLOP/s", flush=True)

    configs: dict[str, dict] = {}
    for name in args.configs:
        cfg: BenchConfig = CONFIGS[name]
        if args.epochs is not None:
            cfg = dataclasses.replace(cfg, epochs=args.epochs)
        not_applicable = {
            p: reason for p in peers if (reason := IMPLEMENTATIONS[p].not_applicable(cfg))
        }
        fixed = list(OURS_FIXED) if args.threads > 1 else []
        implementations = ["ours", *fixed, *(p for p in peers if p not in not_applicable)]
        print(f"\n({name}) {cfg.description}", flush=True)
        flops = training_flops(cfg.layer_sizes, n_train, cfg.epochs)
        loads: dict[str, dict] = {}
        for busy in args.loads:
            if busy:
                print(f" with {busy} busy background process(es):", flush=True)
            with busy_processes(busy):
                runs = measure(cfg, implementations, args, data_dir, scratch)
            loads[str(busy)] = {
                "busy_processes": busy,
                "results": summarise(runs, n_train=n_train, epochs=cfg.epochs, flops=flops),
                "runs": runs,
            }
        # The least loaded block (quiet, by default) is the configuration's main table.
        results, runs = loads[str(args.loads[0])]["results"], loads[str(args.loads[0])]["runs"]
        configs[name] = {
            "description": cfg.description,
            "config": cfg.as_dict(),
            "n_train": n_train,
            "n_test": n_test,
            "epochs": cfg.epochs,
            "training_flops": flops,
            "orders": [alternating(implementations, r) for r in range(min(args.repeats, 2))],
            "not_applicable": not_applicable,
            "threads": {impl: thread_count(impl, cfg, args.threads) for impl in implementations},
            "results": results,
            "runs": runs,
            "loads": loads,
        }

    print("\nsgemm peak again...", flush=True)
    sgemm_runs.append(run_worker(sgemm_spec, scratch, args.timeout))
    sgemm_peak = max(run["gflops"] for run in sgemm_runs)
    for entry in configs.values():
        ours = entry["results"].get("ours", {})
        if ours.get("gflops"):
            ours["fraction_of_sgemm_peak"] = ours["gflops"] / sgemm_peak
    return {
        "schema_version": 1,
        "started": started,
        "settings": {
            "configs": args.configs,
            "peers_requested": args.peers,
            "repeats": args.repeats,
            "threads": args.threads,
            "loads": args.loads,
            "seed": args.seed,
            "quick": args.quick,
            "synthetic": args.synthetic,
            "n_train": n_train,
            "n_test": n_test,
        },
        "machine": {
            "cpu_model": cpu_model(),
            "cores": available_cores(),
            "platform": platform.platform(),
            "versions": versions(),
            "blas": sgemm_runs[0].get("blas", []),
            "load_average": [load_start, os.getloadavg()[0]],
        },
        "sgemm": {
            "gflops": sgemm_peak,
            "sizes": sgemm_sizes,
            "repeats": SGEMM_REPEATS,
            "measurements": [{k: v for k, v in run.items() if k != "blas"} for run in sgemm_runs],
        },
        "labels": {name: impl.label for name, impl in IMPLEMENTATIONS.items()},
        "skipped": skipped,
        "configs": configs,
        "targets": check_targets(configs, sgemm_peak),
    }


def mlflow_metrics(report: dict) -> dict[str, float]:
    """Flat metric names (``a.keras.ratio_to_ours``, ``sgemm_peak_gflops``, ...) for MLflow."""
    metrics = {"sgemm_peak_gflops": report["sgemm"]["gflops"]}
    keys = (
        "ratio_to_ours",
        "median_seconds",
        "samples_per_second",
        "test_top1_accuracy",
        "gflops",
        "peak_rss_mb",
        "fraction_of_sgemm_peak",
    )
    for name, entry in report["configs"].items():
        # The main table (the least loaded block), then each busier block under busy<n>.
        loads = entry.get("loads", {})
        least = min(loads, key=int) if loads else None
        blocks = [("", entry["results"])]
        blocks += [(f"busy{n}.", b["results"]) for n, b in loads.items() if n != least]
        for prefix, results in blocks:
            for impl, row in results.items():
                for key in keys:
                    if row.get(key) is not None and not (impl == "ours" and key == "ratio_to_ours"):
                        metrics[f"{name}.{prefix}{impl}.{key}"] = float(row[key])
    return metrics


def log_to_mlflow(report: dict, files: list[Path]) -> str:
    """One run in experiment ``benchmark`` (stage ``benchmark``): the settings as params, the
    numbers as metrics, the JSON and Markdown reports as artifacts. Returns the run id."""
    from pipeline import tracking

    params = {
        **report["settings"],
        "sgemm": {"sizes": report["sgemm"]["sizes"], "repeats": report["sgemm"]["repeats"]},
        "config": {name: entry["config"] for name, entry in report["configs"].items()},
    }
    tags = {"cpu_model": report["machine"]["cpu_model"], "quick": str(report["settings"]["quick"])}
    for name, version in report["machine"]["versions"].items():
        if version:
            tags[f"version.{name}"] = version
    with tracking.start_run(
        params, stage="benchmark", experiment="benchmark", run_name="benchmark", tags=tags
    ) as run:
        run.log_metrics(mlflow_metrics(report))
        for path in files:
            run.log_file(path)
        return run.id


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = load_data(args)
    with tempfile.TemporaryDirectory(prefix="mlp-bench-") as scratch:
        report = run_benchmark(args, data, Path(scratch))
    json_path = write_json(args.out_dir / "benchmark.json", report)
    markdown = render_markdown(report)
    md_path = args.out_dir / "benchmark.md"
    with atomic_write(md_path, "w") as fh:
        fh.write(markdown)
    print("\n" + markdown)
    print(f"written {json_path} and {md_path}")
    if not args.no_mlflow:
        run_id = log_to_mlflow(report, [json_path, md_path])
        print(f"logged MLflow run {run_id} (experiment 'benchmark')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(None))
