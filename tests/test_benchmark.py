"""The speed benchmark's harness (benchmarks/): its arithmetic, its reports, how it runs.

Nothing here times anything or asserts a speed: the benchmark measures, tests check the
measuring.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench, peers
from benchmarks.configs import CONFIGS, flops_per_example, training_flops
from benchmarks.data import synthetic
from benchmarks.report import check_targets, render_markdown, summarise
from benchmarks.worker import config_from_dict, sgemm_peak

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- FLOP counting
def test_flops_of_a_tiny_network_by_hand():
    # 3-4-2, one example: forward x@W1 (2*3*4 = 24) and h@W2 (2*4*2 = 16); weight gradients
    # x.T@d1 (24) and h.T@d2 (16); the error sent back d2@W2.T (16); none for the input.
    assert flops_per_example([3, 4, 2]) == 24 + 16 + 24 + 16 + 16
    assert training_flops([3, 4, 2], n_samples=5, epochs=2) == 96 * 5 * 2


def test_flops_of_one_layer_has_no_error_to_send_back():
    assert flops_per_example([10, 3]) == 2 * 30 + 2 * 30


def test_flops_of_the_compute_bound_configuration():
    s = 784 * 1024 + 1024 * 1024 + 1024 * 10
    assert flops_per_example(CONFIGS["c"].layer_sizes) == 6 * s - 2 * 784 * 1024


def test_flops_need_two_layers():
    with pytest.raises(ValueError, match="two layer sizes"):
        flops_per_example([784])


# ---------------------------------------------------------------------------- summaries
def _run(impl, repeat, seconds, accuracy=0.9, rss=100.0):
    return {
        "implementation": impl,
        "repeat": repeat,
        "seconds": seconds,
        "test_top1_accuracy": accuracy,
        "peak_rss_mb": rss,
        "peak_rss_after_loading_mb": rss / 2,
    }


def test_summary_medians_and_per_repeat_ratios():
    runs = [
        _run("ours", 0, 1.0, 0.95),
        _run("keras", 0, 5.0, 0.94, rss=300),
        _run("keras", 1, 4.0, 0.96, rss=500),
        _run("ours", 1, 2.0, 0.95),
        _run("ours", 2, 3.0, 0.95),
        _run("keras", 2, 9.0, 0.93, rss=400),
    ]
    summary = summarise(runs, n_train=100, epochs=2, flops=6_000_000_000)
    assert list(summary) == ["ours", "keras"]
    ours, keras = summary["ours"], summary["keras"]
    assert ours["median_seconds"] == 2.0
    assert ours["samples_per_second"] == 2 * 100 / 2.0
    assert ours["gflops"] == pytest.approx(3.0)
    assert ours["ratio_to_ours"] == 1.0
    assert keras["seconds"] == [5.0, 4.0, 9.0]
    assert keras["median_seconds"] == 5.0
    # Ratios within each repeat: 5/1, 4/2, 9/3; their median is 3, not 5/2 (ratio of medians).
    assert keras["ratios_to_ours"] == [5.0, 2.0, 3.0]
    assert keras["ratio_to_ours"] == 3.0
    assert keras["test_top1_accuracy"] == 0.94
    assert keras["peak_rss_mb"] == 500


def test_summary_leaves_out_failed_runs_and_reports_them():
    runs = [
        _run("ours", 0, 1.0),
        {"implementation": "torch", "repeat": 0, "error": "exit status 1: boom"},
        _run("ours", 1, 1.0),
        _run("torch", 1, 3.0),
        {"implementation": "sklearn", "repeat": 0, "error": "no result after 10 s"},
    ]
    summary = summarise(runs, n_train=10, epochs=1, flops=1)
    assert summary["torch"]["seconds"] == [3.0]
    assert summary["torch"]["ratio_to_ours"] == 3.0
    assert summary["torch"]["errors"] == ["exit status 1: boom"]
    assert summary["sklearn"] == {"median_seconds": None, "errors": ["no result after 10 s"]}


def test_alternating_order():
    impls = ["ours", "bare", "keras"]
    assert bench.alternating(impls, 0) == impls
    assert bench.alternating(impls, 1) == ["keras", "bare", "ours"]
    assert bench.alternating(impls, 2) == impls


# ---------------------------------------------------------------------------- targets, Markdown
def _report(configs, sgemm=100.0, skipped=None, quick=False):
    return {
        "settings": {"threads": 2, "repeats": 3, "quick": quick, "synthetic": False},
        "machine": {
            "cpu_model": "Test CPU",
            "cores": 2,
            "versions": {"numpy": "2.4.6", "torch": None},
            "load_average": [0.1, 0.2],
        },
        "sgemm": {"gflops": sgemm},
        "labels": {"ours": "mlp (NumPy)", "keras": "Keras/TensorFlow (CPU)"},
        "skipped": skipped or {},
        "configs": configs,
        "targets": check_targets(configs, sgemm),
    }


def _entry(name, results, not_applicable=None):
    return {
        "description": f"config {name}",
        "n_train": 60000,
        "epochs": 2,
        "training_flops": 12_000_000_000,
        "not_applicable": not_applicable or {},
        "results": results,
    }


def _row(seconds, ratio, accuracy, gflops=10.0):
    return {
        "median_seconds": seconds,
        "samples_per_second": 120000 / seconds,
        "ratio_to_ours": ratio,
        "test_top1_accuracy": accuracy,
        "gflops": gflops,
        "peak_rss_mb": 1234.4,
        "errors": [],
    }


def test_targets():
    configs = {
        "a": _entry(
            "a",
            {
                "ours": _row(1.0, 1.0, 0.960),
                "keras": _row(6.0, 6.0, 0.9560),  # fast enough, 0.4 points off
                "torch": _row(2.0, 2.0, 0.950),  # too slow a peer for us, 1 point off
                "bare": _row(0.95, 0.95, 0.960),  # ours 1/0.95 = 1.05x the bare loop: fine
            },
        ),
        "c": _entry("c", {"ours": _row(10.0, 1.0, 0.97, gflops=59.0), "keras": _row(9, 0.9, 0.97)}),
    }
    met = {(t["config"], t["check"]): t["met"] for t in check_targets(configs, sgemm_gflops=100)}
    assert met[("a", "keras time / our time")] is True
    assert met[("a", "keras test top-1 vs ours, points")] is True
    assert met[("a", "torch time / our time")] is False
    assert met[("a", "torch test top-1 vs ours, points")] is False
    assert met[("a", "bare time / our time")] is True
    assert met[("c", "keras time / our time")] is False
    assert met[("c", "our GFLOP/s / sgemm peak")] is False  # 59 of 100


def test_markdown_table():
    configs = {
        "a": _entry(
            "a",
            {
                "ours": _row(2.0, 1.0, 0.9612),
                "keras": _row(20.5, 10.25, 0.9598),
                "sklearn": {"median_seconds": None, "errors": ["exit status 1: ImportError"]},
            },
        ),
        "c": _entry(
            "c",
            {"ours": _row(10.0, 1.0, 0.97, gflops=75.0)},
            not_applicable={"bare": "only the reference network"},
        ),
    }
    text = render_markdown(_report(configs, skipped={"torch": "not installed (no module torch)"}))
    assert "Test CPU, 2 cores; 2 thread(s) per peer, ours the thread policy's (" in text
    assert "### (a) config a" in text
    assert "| mlp (NumPy) (ours, auto) | 2.00 | 60,000 | 1.00 | 0.9612 | 10.0 | 1,234 |" in text
    assert "| Keras/TensorFlow (CPU) | 20.50 | 5,854 | 10.25 | 0.9598 | 10.0 | 1,234 |" in text
    assert "| sklearn | failed: exit status 1: ImportError |" in text
    assert "75.0 GFLOP/s in the matrix products, 75% of the measured sgemm peak" in text
    assert "Not run: bare: only the reference network." in text
    assert "Skipped torch: not installed (no module torch)." in text
    assert "| (a) | keras time / our time | >= 5 | 10.25 | yes |" in text
    assert "| (c) | our GFLOP/s / sgemm peak | >= 0.6 | 0.75 | yes |" in text
    assert "Smoke run" not in text
    assert "machine was busy" not in text
    assert "Smoke run" in render_markdown(_report(configs, quick=True))
    configs["a"]["runs"] = [{"other_cpu_load": 0.05}, {"other_cpu_load": 0.15}]
    quiet = render_markdown(_report(configs))
    assert "Other processes kept 0.10 cores busy on average during the runs (at most 0.15)" in quiet
    assert "machine was busy" not in quiet
    configs["c"]["runs"] = [{"other_cpu_load": 1.5}]
    assert "machine was busy" in render_markdown(_report(configs))


# ---------------------------------------------------------------------------- peers
def test_a_missing_peer_is_skipped_with_a_message(monkeypatch):
    torch = dataclasses.replace(peers.IMPLEMENTATIONS["torch"], modules=("no_such_module_xyz",))
    monkeypatch.setitem(peers.IMPLEMENTATIONS, "torch", torch)
    available, skipped = peers.split_available(["bare", "torch"])
    assert available == ["bare"]
    assert "no module no_such_module_xyz" in skipped["torch"]
    assert "pip install" in skipped["torch"]


def test_smoke_runs_do_not_replace_the_real_report():
    assert bench.parse_args([]).out_dir == Path("reports")
    assert bench.parse_args(["--quick"]).out_dir == Path("reports/quick")
    assert bench.parse_args(["--synthetic"]).out_dir == Path("reports/quick")
    assert bench.parse_args(["--quick", "--out-dir", "x"]).out_dir == Path("x")


def test_unknown_peer_is_refused():
    with pytest.raises(ValueError, match="unknown peer"):
        peers.split_available(["jax"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--peers", "jax"])


def test_bare_loop_runs_only_the_reference_network():
    assert peers.bare_not_applicable(CONFIGS["a"]) is None
    assert "reference network" in peers.bare_not_applicable(CONFIGS["b"])


def test_config_round_trips_through_the_worker_spec():
    for cfg in CONFIGS.values():
        assert config_from_dict(json.loads(json.dumps(cfg.as_dict()))) == cfg


def test_sgemm_peak_reports_gflops():
    result = sgemm_peak([32, 64], repeats=2)
    assert set(result["gflops_by_size"]) == {"32", "64"}
    assert result["gflops"] == max(result["gflops_by_size"].values()) > 0


def test_orchestration_skips_alternates_and_reports(monkeypatch, tmp_path, capsys):
    """The whole harness in-process, with a fake worker: who runs, in which order, what is kept."""
    torch = dataclasses.replace(peers.IMPLEMENTATIONS["torch"], modules=("no_such_module_xyz",))
    monkeypatch.setitem(peers.IMPLEMENTATIONS, "torch", torch)
    calls = []

    def fake_worker(spec, scratch, timeout):
        if spec["kind"] == "sgemm":
            return {"gflops": 50.0, "gflops_by_size": {"256": 50.0}, "blas": []}
        calls.append((spec["config"]["name"], spec["implementation"]))
        if spec["implementation"] == "sklearn":
            raise bench.WorkerError("exit status 1: it broke")
        seconds = {"ours": 1.0, "bare": 0.9}[spec["implementation"]]
        return {
            "seconds": seconds,
            "test_top1_accuracy": 0.5,
            "peak_rss_mb": 80.0,
            "peak_rss_after_loading_mb": 60.0,
            "n_train": 50,
        }

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    monkeypatch.setattr(bench, "log_to_mlflow", lambda *a: pytest.fail("--no-mlflow"))
    argv = ["--synthetic", "--n-train", "50", "--n-test", "20", "--configs", "a,b"]
    argv += ["--peers", "bare,sklearn,torch", "--repeats", "2", "--epochs", "1"]
    argv += ["--threads", "1", "--loads", "0"]  # no fixed-count variants, no busy processes
    argv += ["--out-dir", str(tmp_path), "--no-mlflow"]
    assert bench.main(argv) == 0

    out = capsys.readouterr().out
    assert "skipping torch: not installed (no module no_such_module_xyz)" in out
    assert calls == [
        ("a", "ours"), ("a", "bare"), ("a", "sklearn"),
        ("a", "sklearn"), ("a", "bare"), ("a", "ours"),
        ("b", "ours"), ("b", "sklearn"),
        ("b", "sklearn"), ("b", "ours"),
    ]  # fmt: skip
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["skipped"].keys() == {"torch"}
    assert report["configs"]["b"]["not_applicable"].keys() == {"bare"}
    a = report["configs"]["a"]["results"]
    assert a["bare"]["ratio_to_ours"] == pytest.approx(0.9)
    assert a["sklearn"]["errors"] == ["exit status 1: it broke"] * 2
    assert report["configs"]["a"]["epochs"] == 1
    assert "(a) reference: 784-32-16-10 tanh, SGD 0.1, batch 32, 1 epoch" in out
    assert (tmp_path / "benchmark.md").read_text() in out


# ---------------------------------------------------------------------------- peers' models
def _probe(cfg_name: str) -> tuple:
    cfg = dataclasses.replace(CONFIGS[cfg_name], layer_sizes=(784, 12, 8, 10))
    X = synthetic(40, 1)["X_train"]
    return cfg, X, peers.initial_network(cfg, seed=3).forward(X)


@pytest.mark.parametrize("cfg_name", ["a", "b"])
def test_torch_model_is_our_network(cfg_name):
    torch = pytest.importorskip("torch")
    cfg, X, expected = _probe(cfg_name)
    with torch.no_grad():
        logits = peers.torch_model(cfg, seed=3)(torch.from_numpy(X))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cfg_name", ["a", "b"])
def test_sklearn_classifier_starts_from_our_weights(cfg_name):
    pytest.importorskip("sklearn")
    cfg, X, expected = _probe(cfg_name)
    y = np.arange(40) % 10
    classifier = peers.sklearn_classifier(cfg, X, y, seed=3)
    assert classifier.get_params()["max_iter"] == cfg.epochs
    np.testing.assert_allclose(classifier.predict_proba(X), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_keras_model_is_our_network():
    pytest.importorskip("tensorflow")
    cfg, X, expected = _probe("a")
    probabilities = peers.keras_model(cfg, seed=3).predict(X, verbose=0)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- end to end
def test_quick_run_in_a_subprocess(tmp_path):
    """`python -m benchmarks.bench --quick` on synthetic data with the NumPy implementations."""
    out_dir = tmp_path / "reports"
    process = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.bench", "--quick", "--synthetic",
            "--configs", "a", "--peers", "bare", "--repeats", "2", "--n-train", "300",
            "--threads", "1", "--loads", "0", "--out-dir", str(out_dir), "--no-mlflow",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    report = json.loads((out_dir / "benchmark.json").read_text())
    assert {"settings", "machine", "sgemm", "configs", "targets", "skipped"} <= report.keys()
    assert report["sgemm"]["gflops"] > 0
    assert report["machine"]["versions"]["numpy"] == np.__version__
    entry = report["configs"]["a"]
    assert entry["n_train"] == 300 and entry["epochs"] == 1
    assert entry["results"].keys() == {"ours", "bare"}
    for row in entry["results"].values():
        assert len(row["seconds"]) == 2
        assert {
            "median_seconds",
            "samples_per_second",
            "ratio_to_ours",
            "test_top1_accuracy",
            "gflops",
            "peak_rss_mb",
        } <= row.keys()
        assert 0 <= row["test_top1_accuracy"] <= 1
        assert row["peak_rss_mb"] > 0
    # Ours and the bare loop do the same math from the same weights in the same batch order.
    assert entry["results"]["ours"]["test_top1_accuracy"] == pytest.approx(
        entry["results"]["bare"]["test_top1_accuracy"], abs=0.01
    )
    assert (out_dir / "benchmark.md").read_text() in process.stdout
    for run in entry["runs"]:
        assert run["other_cpu_load"] >= 0  # measured on Linux, from /proc/stat


def test_busy_cpu_seconds_counts_up():
    before = bench.busy_cpu_seconds()
    if before is None:
        pytest.skip("no /proc/stat")
    sum(i * i for i in range(200_000))  # some work
    assert bench.busy_cpu_seconds() > before


# ---------------------------------------------------------------------------- MLflow
def test_mlflow_metrics_are_flat_names():
    configs = {"a": _entry("a", {"ours": _row(1.0, 1.0, 0.96), "keras": _row(6.0, 6.0, 0.95)})}
    configs["a"]["results"]["ours"]["fraction_of_sgemm_peak"] = 0.1
    metrics = bench.mlflow_metrics(_report(configs, sgemm=80.0))
    assert metrics["sgemm_peak_gflops"] == 80.0
    assert metrics["a.keras.ratio_to_ours"] == 6.0
    assert metrics["a.keras.test_top1_accuracy"] == 0.95
    assert metrics["a.ours.fraction_of_sgemm_peak"] == 0.1
    assert "a.ours.ratio_to_ours" not in metrics


def test_benchmark_run_is_logged_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from mlflow.tracking import MlflowClient

    configs = {"a": _entry("a", {"ours": _row(1.0, 1.0, 0.96), "keras": _row(6.0, 6.0, 0.95)})}
    configs["a"]["config"] = dataclasses.asdict(CONFIGS["a"])
    report = _report(configs)
    report["sgemm"].update(sizes=[256], repeats=5)
    files = [tmp_path / "benchmark.json", tmp_path / "benchmark.md"]
    files[0].write_text("{}")
    files[1].write_text("table")
    run_id = bench.log_to_mlflow(report, files)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "benchmark"
    assert run.data.tags["stage"] == "benchmark"
    assert run.data.metrics["a.keras.ratio_to_ours"] == 6.0
    assert run.data.params["config.a.batch_size"] == "32"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"benchmark.json", "benchmark.md"} <= artifacts


# ---------------------------------------------------------------------------- contention
def _busy_children() -> list:
    import psutil

    return [
        child
        for child in psutil.Process().children()
        if child.is_running() and "while os.getppid() == parent" in " ".join(child.cmdline())
    ]


def test_busy_processes_really_spin_and_are_stopped(monkeypatch):
    import psutil

    monkeypatch.setattr(bench, "BUSY_WARMUP", 0.5)
    with bench.busy_processes(2) as started:
        assert len(started) == 2 and len(_busy_children()) == 2
        cpu = [psutil.Process(p.pid).cpu_times() for p in started]
        assert all(t.user + t.system > 0 for t in cpu)  # they burn CPU
    assert all(p.poll() is not None for p in started)
    assert _busy_children() == []
    # stopped also when the block fails
    with pytest.raises(RuntimeError), bench.busy_processes(1) as started:
        raise RuntimeError("boom")
    assert started[0].poll() is not None


def test_a_busy_process_stops_when_the_benchmark_dies(tmp_path):
    """Killed with SIGKILL, the benchmark cannot stop its busy processes: they stop themselves."""
    import psutil

    script = (
        "import time, benchmarks.bench as b\n"
        "b.BUSY_WARMUP = 0\n"
        "with b.busy_processes(1) as p:\n"
        "    print(p[0].pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    busy = psutil.Process(pid)
    try:
        busy.wait(timeout=30)  # it notices its new parent and ends
    except psutil.TimeoutExpired:
        busy.kill()
        pytest.fail("the busy process outlived the benchmark")


def test_quick_contention_run_in_a_subprocess(tmp_path):
    """The real thing, small: ours on auto, 1 and 2 threads, quiet and beside one busy process
    the benchmark starts and stops itself."""
    import psutil

    out_dir = tmp_path / "reports"
    process = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.bench", "--quick", "--synthetic",
            "--configs", "a", "--peers", "none", "--repeats", "1", "--n-train", "200",
            "--threads", "2", "--loads", "0,1", "--out-dir", str(out_dir), "--no-mlflow",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    report = json.loads((out_dir / "benchmark.json").read_text())
    entry = report["configs"]["a"]
    assert report["settings"]["loads"] == [0, 1]
    assert entry["loads"].keys() == {"0", "1"}
    assert entry["threads"] == {"ours": 1, "ours-1": 1, "ours-all": 2}
    for block in entry["loads"].values():
        assert block["results"].keys() == {"ours", "ours-1", "ours-all"}
        assert all(run["threads"] == entry["threads"][run["implementation"]]
                   for run in block["runs"])  # fmt: skip
    assert "with 1 busy background process(es):" in process.stdout
    checks = {t["check"] for t in report["targets"]}
    assert {"auto time / best fixed count, quiet", "auto time / best fixed count, 1 busy"} <= checks
    assert "| mlp, 1 thread | 1 |" in (out_dir / "benchmark.md").read_text()
    spinning = "while os.getppid() == parent"
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if spinning in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_the_thread_counts_of_each_implementation():
    a, c = CONFIGS["a"], CONFIGS["c"]
    assert bench.thread_count("ours", a, 2) == 1  # the thread policy
    assert bench.thread_count("ours", c, 2) == 2
    assert bench.thread_count("ours-1", c, 2) == 1
    assert bench.thread_count("ours-all", a, 2) == 2
    assert bench.thread_count("keras", a, 2) == 2


def test_ours_is_trained_as_the_thread_policy_plans_it():
    from benchmarks.peers import ours_plan
    from pipeline.threads import Plan

    a, b, c = CONFIGS["a"], CONFIGS["b"], CONFIGS["c"]
    assert ours_plan(a, 2) == Plan(blas_threads=1, batch_parts=1, workers=1)
    # (b) and (c): two blocks per batch whatever the cores, one BLAS thread per worker
    for cfg in (b, c):
        assert ours_plan(cfg, 2) == Plan(blas_threads=1, batch_parts=2, workers=2)
        assert ours_plan(cfg, 1) == Plan(blas_threads=1, batch_parts=2, workers=1)


def test_contention_mode_runs_every_block_under_its_own_load(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "BUSY_WARMUP", 0.2)
    seen = []

    def fake_worker(spec, scratch, timeout):
        if spec["kind"] == "sgemm":
            return {"gflops": 50.0, "gflops_by_size": {"256": 50.0}, "blas": []}
        busy = len(_busy_children())
        seen.append((spec["implementation"], spec["threads"], busy))
        # ours on one thread is unaffected by load; on two it waits for its threads
        seconds = {"ours": 1.0, "ours-1": 1.0, "ours-all": 1.0 + busy, "bare": 1.1 + busy}
        return {
            "seconds": seconds[spec["implementation"]],
            "test_top1_accuracy": 0.5,
            "peak_rss_mb": 80.0,
            "peak_rss_after_loading_mb": 60.0,
            "n_train": 50,
        }

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    argv = ["--synthetic", "--n-train", "50", "--n-test", "20", "--configs", "a"]
    argv += ["--peers", "bare", "--repeats", "1", "--epochs", "1", "--threads", "2"]
    argv += ["--loads", "2,0,1", "--out-dir", str(tmp_path), "--no-mlflow"]
    assert bench.main(argv) == 0
    # quiet, then one, then two busy processes; ours (auto: 1 thread for (a)), ours on 1 and 2
    assert seen == [
        ("ours", 1, 0), ("ours-1", 1, 0), ("ours-all", 2, 0), ("bare", 2, 0),
        ("ours", 1, 1), ("ours-1", 1, 1), ("ours-all", 2, 1), ("bare", 2, 1),
        ("ours", 1, 2), ("ours-1", 1, 2), ("ours-all", 2, 2), ("bare", 2, 2),
    ]  # fmt: skip
    assert _busy_children() == []
    report = json.loads((tmp_path / "benchmark.json").read_text())
    entry = report["configs"]["a"]
    assert entry["loads"].keys() == {"0", "1", "2"}
    assert entry["results"] == entry["loads"]["0"]["results"]
    assert entry["loads"]["2"]["results"]["ours-all"]["ratio_to_ours"] == 3.0
    assert entry["threads"] == {"ours": 1, "ours-1": 1, "ours-all": 2, "bare": 2}
    met = {t["check"]: (t["value"], t["met"]) for t in report["targets"]}
    assert met["auto time / best fixed count, quiet"] == (1.0, True)
    assert met["auto time / best fixed count, 2 busy"] == (1.0, True)
    assert met["bare time / our time, 2 busy"] == (3.1, True)
    assert met["our time with 2 busy / quiet"] == (1.0, True)
    text = (tmp_path / "benchmark.md").read_text()
    assert "| mlp (NumPy) (ours, auto) | 1 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 |" in text
    assert "| mlp, all threads | 2 | 1.00 | 1.00 | 2.00 | 2.00 | 3.00 | 3.00 |" in text
    metrics = bench.mlflow_metrics(report)
    assert metrics["a.busy2.ours-all.ratio_to_ours"] == 3.0
    assert metrics["a.ours-all.ratio_to_ours"] == 1.0
    assert "a.busy0.ours.median_seconds" not in metrics


def test_the_policy_misses_its_target_when_a_fixed_count_is_much_faster():
    loads = {
        "0": {"results": {"ours": _row(2.0, 1.0, 0.9), "ours-all": _row(1.0, 0.5, 0.9)}},
        "2": {"results": {"ours": _row(3.0, 1.0, 0.9), "ours-1": _row(2.0, 2 / 3, 0.9),
                          "keras": _row(2.0, 2 / 3, 0.9)}},
    }  # fmt: skip
    entry = {**_entry("c", loads["0"]["results"]), "loads": loads}
    met = {t["check"]: t for t in check_targets({"c": entry}, sgemm_gflops=None)}
    assert met["auto time / best fixed count, quiet"]["met"] is False  # 2x the best
    assert met["auto time / best fixed count, 2 busy"]["value"] == pytest.approx(1.5)
    assert met["keras time / our time, 2 busy"]["met"] is False
    assert "our time with 2 busy / quiet" not in met  # only for (a)


@pytest.mark.parametrize("loads", ["x", "-1", ","])
def test_bad_loads_are_refused(loads, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--loads", loads])
    assert exc.value.code == 2
    assert "--loads" in capsys.readouterr().err
