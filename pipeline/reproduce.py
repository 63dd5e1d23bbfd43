"""Reproduce an MLflow run from what the run recorded, and nothing else.

Usage: ``python -m pipeline.reproduce RUN_ID [--write-params]``. It reads the run's tags (git
commit and whether the tree was dirty, SHA-256 of each dataset file, library versions) and its
``config.yaml`` artifact, then says what to do: check out the commit, compare the versions with the
installed ones, the digests with ``data/processed/summary.json`` and the BLAS thread count the run
used with the one its config gives here, and, with ``--write-params``, writes the run's
configuration to ``params.yaml`` (forcing the run's thread count where it would differ) so that
``dvc repro`` trains it again.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import yaml

from pipeline import cli, tracking
from pipeline.config import validate
from pipeline.data.dataset import data_digests
from pipeline.names import BLAS_THREADS_TAG, PARAMS, SUMMARY
from pipeline.training.frameworks import training_threads


def recipe(run_id: str, uri: str | None = None, summary: Path = SUMMARY) -> dict:
    """What the run recorded, compared with this checkout: commit, config, versions, digests."""
    recorded = tracking.read_run(run_id, uri)
    tags, config = recorded["tags"], recorded["config"]
    cfg = validate(config)  # what the run trained is still a valid configuration here

    versions = {}
    for key, value in tags.items():
        if key.startswith("version.") and key != "version.python":
            package = key.removeprefix("version.")
            try:
                installed = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                installed = None
            versions[package] = {"recorded": value, "installed": installed}

    recorded_digests = {
        key.removeprefix("data.sha256."): value
        for key, value in tags.items()
        if key.startswith("data.sha256.")
    }
    local = data_digests(summary)
    digests = {
        name: {"recorded": digest, "local": local.get(name)}
        for name, digest in recorded_digests.items()
    }
    return {
        "run_id": run_id,
        "status": recorded["status"],
        "commit": tags.get("git.commit", "unknown"),
        "dirty": tags.get("git.dirty") == "true",
        "config": config,
        "versions": versions,
        "digests": digests,
        "threads": _threads(tags, cfg),
    }


def _threads(tags: dict, cfg) -> dict:
    """The BLAS threads the run used (tag ``blas.threads``; the last bits of the weights depend
    on it) and what its ``train.blas_threads`` gives in this process."""
    recorded = tags.get(BLAS_THREADS_TAG)
    return {
        "configured": cfg.train.blas_threads,
        "recorded": int(recorded) if recorded not in (None, "None") else None,
        "here": training_threads(cfg),
    }


def params_to_write(r: dict) -> dict:
    """The run's config; where its thread setting would give another BLAS thread count here than
    the run used, with that count forced (``train.blas_threads``), so the retraining gives the
    same bits."""
    config, threads = r["config"], r["threads"]
    if threads["recorded"] is not None and threads["recorded"] != threads["here"]:
        config = {**config, "train": {**config["train"], "blas_threads": threads["recorded"]}}
    return config


def report(r: dict) -> str:
    lines = [f"run {r['run_id']} ({r['status']})", ""]
    lines.append(f"1. git checkout {r['commit']}")
    if r["dirty"]:
        lines.append("   (the run's working tree had uncommitted changes: not all of it is there)")
    lines.append("2. python -m pipeline.reproduce " + r["run_id"] + " --write-params")
    lines.append("3. dvc repro")
    lines.append("")
    for package, v in sorted(r["versions"].items()):
        mark = "ok" if v["recorded"] == v["installed"] else "DIFFERS"
        lines.append(f"{package}: recorded {v['recorded']}, installed {v['installed']} [{mark}]")
    t = r["threads"]
    if t["recorded"] is not None:
        mark = "ok"
        if t["recorded"] != t["here"]:
            mark = f"DIFFERS: --write-params sets train.blas_threads: {t['recorded']}"
        lines.append(
            f"BLAS threads: recorded {t['recorded']}, train.blas_threads: {t['configured']} "
            f"gives {t['here']} here [{mark}]"
        )
    for name, d in sorted(r["digests"].items()):
        mark = "ok" if d["recorded"] == d["local"] else "DIFFERS (run `dvc repro preprocess`)"
        lines.append(f"{name}: sha256 {d['recorded'][:12]} [{mark}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser("python -m pipeline.reproduce", __doc__.splitlines()[0], params=False)
    arguments.add_argument("run_id", help="the MLflow run to reproduce")
    arguments.add_argument(
        "--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or the project's)"
    )
    arguments.add_argument(
        "--write-params", action="store_true", help="write the run's config to --params"
    )
    arguments.add_argument("--params", type=Path, default=PARAMS, help="(default: %(default)s)")
    args = arguments.parse_args(argv)

    def work() -> None:
        r = recipe(args.run_id, args.uri)
        print(report(r))
        if args.write_params:
            args.params.write_text(yaml.safe_dump(params_to_write(r), sort_keys=False))
            print(f"\nwrote {args.params}")

    return cli.run(work)


if __name__ == "__main__":
    raise SystemExit(main())
