"""Write ``params.yaml``: the composition of ``conf/`` (what ``dvc exp run -S ...`` writes).

Usage: ``python -m pipeline.params [OVERRIDE ...]``. It calls DVC's own Hydra composition, so the
committed file is byte for byte what DVC would write; a test keeps it equal to the defaults.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pipeline import cli
from pipeline.config import ConfigError, load_params
from pipeline.errors import UsageError
from pipeline.names import CONF_DIR, PARAMS, PROJECT_ROOT

PARAMS_FILE = PROJECT_ROOT / PARAMS


def write_params(path: Path = PARAMS_FILE, overrides: list[str] | None = None) -> Path:
    """Compose ``conf/`` with ``overrides`` and dump it to ``path``; validate the result.

    The file is replaced only by a valid composition: an override Hydra cannot apply or a value
    the schema refuses is one :class:`UsageError` (or :class:`ConfigError`), and ``path`` keeps
    what it held."""
    from dvc.utils.hydra import compose_and_dump

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".yaml", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}; choose another --out") from None
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            compose_and_dump(tmp, str(CONF_DIR), None, "config", str(PROJECT_ROOT), overrides or [])
        except (HydraException, OmegaConfBaseException) as exc:
            raise UsageError(f"invalid override: {_one_line(exc)}") from None
        try:
            load_params(tmp)  # an invalid composition stops here, naming the key
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(f" (in {tmp})", "")) from None
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _one_line(exc: BaseException) -> str:
    """Hydra's message on one line: its first line, plus the options it lists, if any
    (``model=nosuch``: "Could not find 'model/nosuch' (options: reference, wide, ...)")."""
    lines = [line.strip() for line in str(exc).splitlines()]
    text = lines[0] if lines else type(exc).__name__
    if "Available options" in str(exc):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        options = []
        for line in lines[start + 1 :]:
            if not line or line.endswith(":"):
                break
            options.append(line)
        text += f" (options: {', '.join(options)})"
    elif len(lines) > 1 and lines[1] and not lines[1].startswith("See "):
        text = f"{text.rstrip('.')}; {lines[1]}"
    return text


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser("python -m pipeline.params", __doc__.splitlines()[0], params=False)
    arguments.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=3")
    arguments.add_argument("--out", type=Path, default=PARAMS_FILE, help="file to write")
    args = arguments.parse_args(argv)
    return cli.run(lambda: print(f"wrote {write_params(args.out, args.overrides)}"))


if __name__ == "__main__":
    raise SystemExit(main())
