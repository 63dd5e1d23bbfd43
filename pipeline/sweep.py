"""Hydra multirun sweeps: every point of a grid trained in parallel, each a tracked MLflow run.

    python -m pipeline.sweep --multirun model=reference,wide optimizer.learning_rate=0.01,0.1,0.5
    python -m pipeline.sweep +sweep=default     # the grid of conf/sweep/default.yaml (DVC stage)
    python -m pipeline.sweep model=wide         # one configuration
    python -m pipeline.sweep --help

:func:`main` completes the command line with three Hydra defaults unless it names its own:
``hydra/launcher=local`` (joblib, one process per core: ``conf/hydra/launcher/local.yaml``),
``hydra/callbacks=sweep`` (the parent run and the summary, :mod:`pipeline.sweeps.parent`) and
``hydra/help=sweep``. Each point runs :func:`pipeline.sweeps.points.run_point`. The exit status
follows :mod:`pipeline.cli`: 1 only when every point failed.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import hydra

from pipeline import cli
from pipeline.errors import install_sigterm_handler
from pipeline.names import CONF_DIR
from pipeline.reporting.sweep_summary import override_key
from pipeline.sweeps import parent
from pipeline.sweeps.points import run_point

#: Hydra config groups :func:`main` chooses unless the command line chooses them.
DEFAULT_CHOICES = {"hydra/launcher": "local", "hydra/callbacks": "sweep", "hydra/help": "sweep"}


#: Hydra's default sweep folder (and run folder, without ``--multirun``), plus the process id:
#: two sweeps started in the same second (the resolution of Hydra's default,
#: ``multirun/<date>/<HH-MM-SS>``) never share a folder.
SWEEP_DIR = "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}-{pid}"
RUN_DIR = "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}-{pid}"


def _overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a Hydra command line (``None`` when Hydra cannot parse it)."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return list(get_args_parser().parse_args(argv).overrides)
    except SystemExit:  # bad arguments: Hydra will say so
        return None


def with_default_choices(argv: list[str], *, own_sweep_dir: bool = False) -> list[str]:
    """``argv`` plus :data:`DEFAULT_CHOICES` for the groups it does not choose itself (and,
    with ``own_sweep_dir``, ``hydra.sweep.dir`` :data:`SWEEP_DIR` and ``hydra.run.dir``
    :data:`RUN_DIR` unless it sets them),
    placed next to its other overrides (Hydra wants them in one run)."""
    overrides = _overrides(argv)
    if overrides is None:
        return argv
    chosen = {override_key(o) for o in overrides}
    extra = [f"{group}={name}" for group, name in DEFAULT_CHOICES.items() if group not in chosen]
    if own_sweep_dir:
        for key, folder in (("hydra.sweep.dir", SWEEP_DIR), ("hydra.run.dir", RUN_DIR)):
            if key not in chosen:
                extra.append(f"{key}=" + folder.replace("{pid}", str(os.getpid())))
    if not overrides:
        return [*extra, *argv]
    first = argv.index(overrides[0])
    return [*argv[:first], *extra, *argv[first:]]


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.sweep [--multirun] [overrides...]``; see ``--help``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0], *with_default_choices(argv, own_sweep_dir=True)]
    install_sigterm_handler()
    app = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(run_point)
    try:
        app()
    except BaseException as exc:  # the launcher or Hydra gave up: end what is still open
        parent.finish_all(error=exc)
        if isinstance(exc, KeyboardInterrupt):
            print("interrupted: the runs still open are marked KILLED", file=sys.stderr)
            return cli.INTERRUPTED
        raise
    return cli.OK


if __name__ == "__main__":
    raise SystemExit(main())
