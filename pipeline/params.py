"""Write ``params.yaml``: the composition of ``conf/`` (what ``dvc exp run -S ...`` writes).

Usage: ``python -m pipeline.params [OVERRIDE ...]``. It calls DVC's own Hydra composition, so the
committed file is byte for byte what DVC would write; a test keeps it equal to the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import CONF_DIR, load_params

PARAMS_FILE = CONF_DIR.parent / "params.yaml"


def write_params(path: Path = PARAMS_FILE, overrides: list[str] | None = None) -> Path:
    """Compose ``conf/`` with ``overrides`` and dump it to ``path``; validate the result."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(path, str(CONF_DIR), None, "config", str(CONF_DIR.parent), overrides or [])
    load_params(path)  # an invalid composition stops here, naming the key
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=3")
    parser.add_argument("--out", type=Path, default=PARAMS_FILE, help="file to write")
    args = parser.parse_args(argv)
    print(f"wrote {write_params(args.out, args.overrides)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
