"""Reproduce an MLflow run from what the run recorded, and nothing else.

Usage: ``python -m pipeline.reproduce RUN_ID [--write-params] [--check]``. It reads the run's
tags (git commit and whether the tree was dirty, SHA-256 of each dataset file and of the processed
split it trained on, library versions) and its ``config.yaml`` artifact, then says what to do:
check out the commit, compare the versions with the installed ones, the source digests with
``data/processed/summary.json`` and the split's digest with one recomputed from
``data/processed/mnist.npz``, and the BLAS thread count and blocks per batch the run used with
those its config gives here; with ``--write-params``, it writes the run's configuration to
``params.yaml`` (forcing the run's count where it would differ) so that ``dvc repro`` trains it
again. A check is ``ok`` only when both sides are known and equal; with ``--check`` the exit
status is 1 unless every check is ``ok`` (a count that ``--write-params`` forces counts as ok).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline import cli, tracking
from pipeline.config import validate
from pipeline.data.dataset import data_digests, processed_digest
from pipeline.names import BATCH_PARTS_TAG, BLAS_THREADS_TAG, PARAMS, PROCESSED, SUMMARY
from pipeline.tracking.provenance import installed_version
from pipeline.training.frameworks import training_plan
from pipeline.training.run import SPLIT_TAG

OK = "ok"

#: How a run computed, where its weights' last bits depend on it: the recipe's key, what the
#: report calls it, the ``train`` key that sets it, the run's tag, and the plan's attribute.
COMPUTE = (
    ("threads", "BLAS threads", "blas_threads", BLAS_THREADS_TAG, "blas_threads"),
    ("parts", "batch blocks", "batch_parts", BATCH_PARTS_TAG, "batch_parts"),
)


def recipe(
    run_id: str, uri: str | None = None, summary: Path = SUMMARY, processed: Path | None = None
) -> dict:
    """What the run recorded, compared with this checkout: commit, config, versions, digests of
    the source files (``summary``) and of the processed split (``processed``, by default the
    ``mnist.npz`` beside ``summary``)."""
    recorded = tracking.read_run(run_id, uri)
    tags, config = recorded["tags"], recorded["config"]
    cfg = validate(config)  # what the run trained is still a valid configuration here

    versions = {}
    for key, value in tags.items():
        if key.startswith("version.") and key != "version.python":
            package = key.removeprefix("version.")
            versions[package] = {"recorded": value, "installed": installed_version(package)}

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
    processed = (
        Path(processed) if processed is not None else Path(summary).with_name(PROCESSED.name)
    )
    split = {"recorded": tags.get(SPLIT_TAG), "local": processed_digest(processed)}
    return {
        "run_id": run_id,
        "status": recorded["status"],
        "commit": tags.get("git.commit", "unknown"),
        "dirty": tags.get("git.dirty") == "true",
        "config": config,
        "versions": versions,
        "digests": digests,
        "split": split,
        **_compute(tags, cfg),
    }


def _compute(tags: dict, cfg) -> dict:
    """For each of :data:`COMPUTE`: what the run used (its tag; ``None`` when it has none) and
    what its ``train`` setting gives in this process."""
    plan = training_plan(cfg)
    found = {}
    for key, _, setting, tag, attribute in COMPUTE:
        recorded = tags.get(tag)
        found[key] = {
            "configured": getattr(cfg.train, setting),
            "recorded": int(recorded) if recorded not in (None, "None") else None,
            "here": getattr(plan, attribute),
        }
    return found


def _differs(pair: dict) -> bool:
    return pair["recorded"] is not None and pair["recorded"] != pair["here"]


def params_to_write(r: dict) -> dict:
    """The run's config; where its settings would give another BLAS thread count or other
    blocks per batch here than the run used, with the run's forced (``train.blas_threads``,
    ``train.batch_parts``), so the retraining gives the same bits."""
    config = r["config"]
    for key, _, setting, _, _ in COMPUTE:
        if _differs(r[key]):
            config = {**config, "train": {**config["train"], setting: r[key]["recorded"]}}
    return config


def _same(pair: dict, mine: str) -> bool:
    """Both sides known and equal."""
    recorded, other = pair["recorded"], pair[mine]
    return recorded is not None and other is not None and recorded == other


def differences(r: dict, forced: bool = False) -> list[str]:
    """What keeps this checkout from giving the run's bits: every check that is not ``ok`` (the
    thread count not, when ``forced``: the params written force the run's count)."""
    found = [
        f"{package} {v['recorded']} (installed: {v['installed']})"
        for package, v in sorted(r["versions"].items())
        if not _same(v, "installed")
    ]
    found += [f"source {name}" for name, d in sorted(r["digests"].items()) if not _same(d, "local")]
    if not _same(r["split"], "local"):
        found.append("the processed split")
    for key, label, _, _, _ in COMPUTE:
        if _differs(r[key]) and not forced:
            found.append(f"{label} {r[key]['recorded']} (here: {r[key]['here']})")
    return found


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
    for key, label, setting, _, _ in COMPUTE:
        t = r[key]
        if t["recorded"] is not None:
            mark = "ok"
            if t["recorded"] != t["here"]:
                mark = f"DIFFERS: --write-params sets train.{setting}: {t['recorded']}"
            lines.append(
                f"{label}: recorded {t['recorded']}, train.{setting}: {t['configured']} "
                f"gives {t['here']} here [{mark}]"
            )
    for name, d in sorted(r["digests"].items()):
        mark = OK if _same(d, "local") else "DIFFERS (run `dvc repro preprocess`)"
        lines.append(f"{name}: sha256 {d['recorded'][:12]} [{mark}]")
    split = r["split"]
    if split["recorded"] is None:
        mark = "NOT RECORDED (the run predates split digests: it cannot be checked)"
    elif split["local"] is None:
        mark = "MISSING (no data/processed: run `dvc repro preprocess`)"
    elif split["recorded"] != split["local"]:
        mark = (
            "DIFFERS (data/processed holds another split: write the run's params, "
            "then `dvc repro preprocess`)"
        )
    else:
        mark = OK
    shown = (split["recorded"] or "")[:12] or "-"
    lines.append(f"processed split: sha256 {shown} [{mark}]")
    lines.append("")
    found = differences(r)
    if found:
        lines.append(
            f"NOT reproducible as it stands: {len(found)} check(s) not ok: " + "; ".join(found)
        )
    else:
        lines.append("every recorded check is ok: this checkout should give the run's bits")
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
    arguments.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 unless every check is ok (versions, sources, processed split)",
    )
    args = arguments.parse_args(argv)
    found: list[str] = []

    def work() -> None:
        r = recipe(args.run_id, args.uri)
        print(report(r))
        found.extend(differences(r, forced=args.write_params))
        if args.write_params:
            args.params.write_text(yaml.safe_dump(params_to_write(r), sort_keys=False))
            print(f"\nwrote {args.params}")

    status = cli.run(work)
    if status == cli.OK and args.check and found:
        return cli.FAILED
    return status


if __name__ == "__main__":
    raise SystemExit(main())
