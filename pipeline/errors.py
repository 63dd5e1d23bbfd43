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
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn


class PipelineError(Exception):
    """The work was started and failed; nothing half-written is left behind."""


class UsageError(PipelineError):
    """Nothing was started: fix the command line, the config or the environment."""


class InputError(UsageError, ValueError):
    """An input file is there but unusable (empty, incomplete): rerun the stage that writes it."""


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM (see :func:`install_sigterm_handler`), or when the
    process that started this one has ended (see :func:`stop_with_parent`).

    A ``SystemExit`` with code 143 (128 + SIGTERM): uncaught, the process exits quietly with the
    status a shell expects of a terminated process; ``except Exception`` does not swallow it.
    ``reason`` (also its ``str``) says which.
    """

    def __init__(self, signum: int = signal.SIGTERM, reason: str | None = None):
        super().__init__(128 + signum)
        self.signum = signum
        self.reason = reason or f"terminated by {signal.Signals(signum).name}"

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self):
        return (type(self), (self.signum, self.reason))


#: Shells that run a command string (``sh -c "..."``): how ``dvc repro`` (with ``$SHELL``, or
#: ``/bin/sh``) and CI runners start a command. Some (dash, fish) wait for it instead of
#: replacing themselves with it, so the process that really started the command is their parent.
_SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "fish"})


def _parent_of(pid: int) -> int | None:
    """The parent of ``pid`` (Linux ``/proc``), or None when it has ended or cannot be read."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _launcher_of(pid: int) -> int | None:
    """When ``pid`` is a shell running a command string, the process that started that shell
    (None otherwise, or when it is ``init``: an orphaned shell has nobody left to lose)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if os.path.basename(argv[0]).lstrip("-") not in _SHELLS:
        return None
    options = []
    for arg in argv[1:]:
        if not arg.startswith("-") or arg == "--":
            break
        options.append(arg)
    if not any(not o.startswith("--") and "c" in o for o in options):  # -c, -ec, ...
        return None
    launcher = _parent_of(pid)
    return launcher if launcher not in (None, 0, 1) else None


#: The process that started this one, read as early as a command can (when this module is
#: first imported); :func:`stop_with_parent` watches it, and when it is a ``sh -c`` wrapper, the
#: process that started the shell too (``dvc repro`` killed leaves its ``/bin/sh`` running).
_STARTED_BY = os.getppid()
_LAUNCHED_BY = _launcher_of(_STARTED_BY) if sys.platform.startswith("linux") else None
#: Linux's ``prctl`` option: the signal this process receives when its parent ends.
_PR_SET_PDEATHSIG = 1
_watching = False
_terminating = False


def parent_gone() -> bool:
    """Whether the process that started this one has ended (this process was re-parented), or,
    when that was a ``sh -c`` wrapper, the process that started the shell (it was re-parented)."""
    if os.getppid() != _STARTED_BY:
        return True
    return _LAUNCHED_BY is not None and _parent_of(_STARTED_BY) != _LAUNCHED_BY


def _starter() -> str:
    """Who started this process, for the reason a run ends with."""
    if _LAUNCHED_BY is None:
        return f"the process that started it (pid {_STARTED_BY})"
    return f"the process that started it (pid {_LAUNCHED_BY}, through the shell pid {_STARTED_BY})"


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
    global _terminating
    _arm_deadline(128 + signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    _terminating = True
    if _watching:
        # The kernel signals when the thread that started this process exits: with the parent
        # killed, its other threads may still be ending. Wait a moment for it, to say why this
        # process stops.
        for _ in range(50):
            if parent_gone():
                break
            time.sleep(0.01)
    if parent_gone():
        raise Terminated(signum, f"{_starter()} ended")
    raise Terminated(signum)


def _on_signal(signum: int, frame: Any) -> None:
    global _pending
    # SIGTERM acts once: a second one (the kernel's on the parent's end, then the watcher's; a
    # supervisor that repeats itself) must not interrupt the ending of the open run, or MLflow's
    # exit hook would end it FINISHED. A command's deadline bounds that ending.
    if signum == signal.SIGTERM and (_terminating or _pending == signal.SIGTERM):
        return
    if _deferring:
        if _pending is not None:  # Ctrl-C again: stop now
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
    with the library's state intact. A second Ctrl-C inside the block exits at once.
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
    """Turn SIGTERM into :class:`Terminated` (once: later ones are ignored while the process
    ends) and Ctrl-C (SIGINT) into ``KeyboardInterrupt`` in the main thread, so that an open run
    ends KILLED and nothing half-written stays; both wait for a tracking-store call in progress
    (:func:`deferred_signals`). With ``deadline`` (a command, which ends on them), the process
    exits within :data:`INTERRUPT_GRACE_SECONDS` of them whatever else happens. A SIGINT this
    process was started to ignore stays ignored. Returns False (and does nothing) when not
    called from the main thread, where Python cannot install signal handlers."""
    global _exit_deadline, _terminating
    try:
        signal.signal(signal.SIGTERM, _on_signal)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_signal)
    except ValueError:
        return False
    _exit_deadline = _exit_deadline or deadline
    _terminating = False
    return True


def stop_with_parent(poll_seconds: float = 0.5) -> bool:
    """Stop this process as SIGTERM would (:class:`Terminated`: the open run ends KILLED, no
    output stays) as soon as the process that started it ends, e.g. ``dvc repro`` killed with
    ``kill -9`` by a CI timeout: an orphaned stage must not finish later and overwrite what a
    newer run wrote.

    On Linux the kernel sends SIGTERM when the parent ends (``prctl(PR_SET_PDEATHSIG)``); a
    daemon thread also checks every ``poll_seconds`` whether this process was re-parented, which
    covers other systems and a parent that ended before the ``prctl`` call, and, when the parent
    is a ``sh -c`` wrapper that waits for its command (``dvc repro`` runs stages with ``$SHELL``
    or ``/bin/sh``; dash and fish wait), whether that shell was. Installs the SIGTERM
    handler; returns False (and watches nothing) outside the main thread, or when SIGHUP is
    ignored: the process was started with ``nohup`` to outlive its terminal on purpose."""
    global _watching
    if threading.current_thread() is not threading.main_thread():
        return False
    if not install_sigterm_handler():
        return False
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # no libc to call: the watcher below still works
            pass
    if parent_gone():
        raise Terminated(signal.SIGTERM, f"{_starter()} had ended")
    if not _watching:
        _watching = True
        threading.Thread(
            target=_watch_parent, args=(poll_seconds,), name="parent-watch", daemon=True
        ).start()
    return True


def _watch_parent(poll_seconds: float) -> None:
    while not parent_gone():
        time.sleep(poll_seconds)
    os.kill(os.getpid(), signal.SIGTERM)  # the main thread's handler raises Terminated
