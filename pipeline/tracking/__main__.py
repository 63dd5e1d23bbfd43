"""``python -m pipeline.tracking [--uri URI]``: open the store as every command does, and do
nothing else: a copied or moved project's artifact locations come back beside its SQLite store
(:mod:`pipeline.tracking.portable`) and runs whose process died end KILLED
(:mod:`pipeline.tracking.reaper`). ``make ui`` runs it before it starts the UI."""

from __future__ import annotations

from pipeline import cli, tracking


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser(
        "python -m pipeline.tracking",
        "Open the MLflow store as every command does: move a copied project's artifact "
        "locations back beside it, end runs whose process died.",
        params=False,
    )
    arguments.add_argument(
        "--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or the project's)"
    )
    args = arguments.parse_args(argv)
    cli.setup_logging()
    return cli.run(lambda: tracking.open_store(args.uri))


if __name__ == "__main__":
    raise SystemExit(main())
