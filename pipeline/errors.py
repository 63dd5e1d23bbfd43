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

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any, NoReturn


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


#: Seconds a command may take to end after an interrupt before it exits regardless (its open
#: MLflow run is then ended KILLED by the next command that opens the store).
INTERRUPT_GRACE_SECONDS = 30.0

_deferring = 0  # depth of :func:`deferred_signals` blocks in the main thread
_pending: int | None = None  # a signal that arrived inside one, raised when it ends
_deadline: threading.Timer | None = None
_exit_deadline = False  # whether an interrupt arms it: a command's process, not a library user


def _hard_exit(code: int, why: str) -> None:
    try:
        os.write(
            2,
            f"error: {why}: exiting now; the next command that opens the MLflow store ends "
            "the run KILLED\n".encode(),
        )
    finally:
        os._exit(code)


def _arm_deadline(code: int) -> None:
    """After an interrupt, the process ends within :data:`INTERRUPT_GRACE_SECONDS` whatever
    happens (a lock left held by a library, a thread that never ends)."""
    global _deadline
    if _exit_deadline and _deadline is None:
        why = f"still not ended {INTERRUPT_GRACE_SECONDS:g} s after the interrupt"
        _deadline = threading.Timer(INTERRUPT_GRACE_SECONDS, _hard_exit, (code, why))
        _deadline.daemon = True
        _deadline.start()


def _raise_for(signum: int) -> NoReturn:
    _arm_deadline(128 + signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _on_signal(signum: int, frame: Any) -> None:
    global _pending
    if _deferring:
        if _pending is not None:  # asked twice: stop now
            _hard_exit(128 + signum, "interrupted again during a tracking store call")
        _pending = signum
        return
    _raise_for(signum)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs (in the main thread), then act on them.

    An exception raised at an arbitrary instruction inside a library (MLflow, SQLAlchemy) can
    leave one of its locks held (a ``with lock:`` interrupted as it exits), and the next call
    that needs the lock, such as the one that ends the run KILLED, then waits forever. Every
    tracking-store call runs in such a block: the interrupt is raised when the call returns,
    with the library's state intact. A second signal inside the block exits at once.
    """
    global _deferring, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)


def install_sigterm_handler(*, deadline: bool = False) -> bool:
    """Turn SIGTERM into :class:`Terminated` and Ctrl-C (SIGINT) into ``KeyboardInterrupt`` in
    the main thread, so that an open run ends KILLED and nothing half-written stays; both wait
    for a tracking-store call in progress (:func:`deferred_signals`). With ``deadline`` (a
    command, which ends on them), the process exits within :data:`INTERRUPT_GRACE_SECONDS` of
    them whatever else happens. A SIGINT this process was started to ignore stays ignored.
    Returns False (and does nothing) when not called from the main thread, where Python cannot
    install signal handlers."""
    global _exit_deadline
    _exit_deadline = _exit_deadline or deadline
    try:
        signal.signal(signal.SIGTERM, _on_signal)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_signal)
    except ValueError:
        return False
    return True
