"""The pipeline's error classes, by what the user has to do about them.

Every command maps them to one ``error:`` line and one exit code (:mod:`pipeline.cli`):

- :class:`UsageError` (exit code 2): nothing was started. The command line, the config or the
  environment is wrong, or an input is missing; the message says what to change.
- :class:`PipelineError` (exit code 1): the work was started and failed (a download no source
  could serve, a corrupt data file, a baseline that cannot train); the message says why.

``FileNotFoundError`` (a missing input) counts as a usage error and :class:`mlp.DivergenceError`
as a failed run; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
from typing import Any


class PipelineError(Exception):
    """The work was started and failed; nothing half-written is left behind."""


class UsageError(PipelineError):
    """Nothing was started: fix the command line, the config or the environment."""


class InputError(UsageError, ValueError):
    """An input file is there but unusable (empty, incomplete): rerun the stage that writes it."""


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM (see :func:`install_sigterm_handler`).

    A ``SystemExit`` with code 143 (128 + SIGTERM): uncaught, the process exits quietly with the
    status a shell expects of a terminated process; ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.signum = signum


def install_sigterm_handler() -> bool:
    """Turn SIGTERM into :class:`Terminated` in the main thread, so that an open run ends KILLED
    and nothing half-written stays. Returns False (and does nothing) when not called from the
    main thread, where Python cannot install signal handlers."""

    def _raise(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:
        return False
    return True
