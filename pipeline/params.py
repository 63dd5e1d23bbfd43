"""Write ``params.yaml``: the composition of ``conf/`` (what ``dvc exp run -S ...`` writes).

Usage: ``python -m pipeline.params [OVERRIDE ...]``. It calls DVC's own Hydra composition, so the
committed file is byte for byte what DVC would write; a test keeps it equal to the defaults.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import cli
from pipeline.config import load_params
from pipeline.names import CONF_DIR, PARAMS, PROJECT_ROOT

PARAMS_FILE = PROJECT_ROOT / PARAMS


def write_params(path: Path = PARAMS_FILE, overrides: list[str] | None = None) -> Path:
    """Compose ``conf/`` with ``overrides`` and dump it to ``path``; validate the result."""
    from dvc.utils.hydra import compose_and_dump

    path.parent.mkdir(parents=True, exist_ok=True)
    compose_and_dump(path, str(CONF_DIR), None, "config", str(PROJECT_ROOT), overrides or [])
    load_params(path)  # an invalid composition stops here, naming the key
    return path


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser("python -m pipeline.params", __doc__.splitlines()[0], params=False)
    arguments.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=3")
    arguments.add_argument("--out", type=Path, default=PARAMS_FILE, help="file to write")
    args = arguments.parse_args(argv)
    return cli.run(lambda: print(f"wrote {write_params(args.out, args.overrides)}"))


if __name__ == "__main__":
    raise SystemExit(main())
