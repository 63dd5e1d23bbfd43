"""Reproduce an MLflow run from what the run recorded, and nothing else.

Usage: ``python -m pipeline.reproduce RUN_ID [--write-params]``. It reads the run's tags (git
commit and whether the tree was dirty, SHA-256 of each dataset file, library versions) and its
``config.yaml`` artifact, then says what to do: check out the commit, compare the versions with the
installed ones and the digests with ``data/processed/summary.json``, and, with ``--write-params``,
writes the run's configuration to ``params.yaml`` so that ``dvc repro`` trains it again.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tempfile
from pathlib import Path

import yaml

from pipeline import tracking
from pipeline.config import ConfigError, validate
from pipeline.training import SUMMARY, data_digests


def recipe(run_id: str, uri: str | None = None, summary: Path = SUMMARY) -> dict:
    """What the run recorded, compared with this checkout: commit, config, versions, digests."""
    client = tracking.store_client(tracking.resolve_tracking_uri(uri))
    run = client.get_run(run_id)
    tags = run.data.tags
    with tempfile.TemporaryDirectory() as tmp:
        local_copy = Path(client.download_artifacts(run_id, "config.yaml", tmp))
        config = yaml.safe_load(local_copy.read_text())
    validate(config)  # what the run trained is still a valid configuration here

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
        "status": run.info.status,
        "commit": tags.get("git.commit", "unknown"),
        "dirty": tags.get("git.dirty") == "true",
        "config": config,
        "versions": versions,
        "digests": digests,
    }


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
    for name, d in sorted(r["digests"].items()):
        mark = "ok" if d["recorded"] == d["local"] else "DIFFERS (run `dvc repro preprocess`)"
        lines.append(f"{name}: sha256 {d['recorded'][:12]} [{mark}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.reproduce", description=__doc__)
    parser.add_argument("run_id", help="the MLflow run to reproduce")
    parser.add_argument(
        "--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or the project's)"
    )
    parser.add_argument(
        "--write-params", action="store_true", help="write the run's config to params.yaml"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    try:
        r = recipe(args.run_id, args.uri)
    except (ConfigError, tracking.TrackingUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except tracking.MlflowException as exc:
        print(f"error: cannot read run {args.run_id}: {exc.message}", file=sys.stderr)
        return 2
    print(report(r))
    if args.write_params:
        args.params.write_text(yaml.safe_dump(r["config"], sort_keys=False))
        print(f"\nwrote {args.params}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
