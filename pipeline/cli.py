"""How every command starts and ends: its command line, its config, its errors, its exit code.

Exit codes, the same for every command (``python -m pipeline.<stage>``, the sweep, reproduce):

====  ==========================================================================================
0     done
1     the work started and failed: no source served a download, a data file is corrupt, the
      training diverged, the baseline could not train, every point of a sweep failed
2     nothing was started: an invalid config or command line, a missing input (run the stage
      that makes it), a tracking server that does not answer
130   interrupted (Ctrl-C); 143: terminated (SIGTERM, or the process that started a stage
      ended). Open MLflow runs end KILLED.
====  ==========================================================================================

Each error is one ``error:`` line on stderr saying what was wrong and what to do; anything not in
:mod:`pipeline.errors`' classes is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlp import DivergenceError, ModelFileError
from pipeline.errors import (
    PipelineError,
    Terminated,
    UsageError,
    install_sigterm_handler,
    stop_with_parent,
)
from pipeline.names import PARAMS

OK, FAILED, USAGE, INTERRUPTED, TERMINATED = 0, 1, 2, 130, 143
#: Errors that are reported in one line rather than with a traceback.
REPORTED = (PipelineError, FileNotFoundError, DivergenceError, ModelFileError)


def exit_code(exc: BaseException) -> int:
    """The exit code for a command that stopped with ``exc`` (see the module's table)."""
    if isinstance(exc, Terminated):
        return TERMINATED
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, (UsageError, FileNotFoundError, ModelFileError)):
        return USAGE
    return FAILED


def setup_logging(level: int = logging.INFO) -> None:
    """Plain ``message`` lines on stderr (a no-op if logging is already configured)."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


def parser(
    prog: str,
    description: str,
    *,
    params: bool = True,
    paths: Mapping[str, tuple[Path, str]] | None = None,
) -> argparse.ArgumentParser:
    """An argument parser for a command: ``--params`` unless ``params`` is false, and one option
    per entry of ``paths`` (``"--data": (default, help)``), each a path."""
    result = argparse.ArgumentParser(prog=prog, description=description)
    if params:
        result.add_argument(
            "--params", type=Path, default=PARAMS, help="composed config to read (%(default)s)"
        )
    for option, (default, text) in (paths or {}).items():
        result.add_argument(option, type=Path, default=default, help=f"{text} (%(default)s)")
    return result


def run(
    work: Callable[[], Any],
    *,
    failed: str = "",
    interrupted: str = "",
) -> int:
    """Run ``work()`` and turn how it ended into an exit code, with one line on stderr for an
    error. ``failed`` and ``interrupted`` say what was (not) left behind, e.g. "No model was
    written; the MLflow run is marked FAILED."; a usage error needs no such line."""
    install_sigterm_handler(deadline=True)
    try:
        work()
    except (KeyboardInterrupt, Terminated) as exc:
        why = f" ({exc})" if isinstance(exc, Terminated) else ""
        print(f"interrupted{why}{': ' + interrupted if interrupted else ''}", file=sys.stderr)
        return exit_code(exc)
    except REPORTED as exc:
        code = exit_code(exc)
        note = f"\n{failed}" if failed and code == FAILED else ""
        print(f"error: {exc}{note}", file=sys.stderr)
        return code
    except Exception as exc:
        # The tracking store failed during the work (a server that went away, a database that
        # turned read-only): one line naming it. The module is only looked at if it was loaded.
        store = sys.modules.get("pipeline.tracking.store")
        problem = store.store_failure(exc) if store is not None else None
        if problem is None:
            raise
        print(f"error: {problem}; check it, then run the command again", file=sys.stderr)
        return FAILED
    return OK


def run_stage(
    arguments: argparse.ArgumentParser,
    stage: Callable[..., Any],
    argv: list[str] | None = None,
    *,
    failed: str = "",
    interrupted: str = "",
) -> int:
    """A DVC stage's ``main``: parse ``argv``, set up logging, read and validate ``--params``,
    then ``stage(config, **options)`` (the other options by name, e.g. ``data=``, ``model=``),
    with :func:`run`'s error handling."""
    from pipeline.config import load_params

    options = vars(arguments.parse_args(argv))
    params = options.pop("params")
    setup_logging()

    def work() -> Any:
        # A stage stops, as on SIGTERM, when the process that started it (dvc repro) ends.
        stop_with_parent()
        return stage(load_params(params), **options)

    return run(work, failed=failed, interrupted=interrupted)
