"""``python tests/helpers/interrupt_probe.py URI [--stride K] [--library-default]``: SIGINT at
every (K-th) line of a tracking-store write, one position per write; prints one JSON line of what
happened.

The run is started through :func:`pipeline.tracking.start_run`; then for n = 1, 2, ... a trace
function counts the lines executed in MLflow, SQLAlchemy and sqlite3 while the run logs a metric,
and on the n-th one sends this process SIGINT (a real signal: Python acts on it at its next check,
as it does on Ctrl-C). The write must end with ``KeyboardInterrupt``, and the store must then
still take a write (a hang is caught by ``faulthandler``, which dumps the stacks and exits 1).
It stops when a write runs out of lines before the n-th, then interrupts the run itself, which
must end KILLED. ``--library-default`` keeps Python's own SIGINT handler (the behaviour without
this project's handler), to show what the handler prevents.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys

from pipeline import errors
from pipeline.tracking import start_run
from pipeline.tracking.store import store_client

#: Seconds a write after an interrupt may take before it counts as a hang.
HANG_SECONDS = 60
WATCHED = ("/mlflow/", "/sqlalchemy/", "/sqlite3/")


def main(uri: str, library_default: bool, stride: int = 1) -> int:
    if not library_default:
        errors.install_sigterm_handler()
    fired: list[str] = []
    lost = 0
    position = 0
    try:
        with start_run({"probe": 1}, stage="probe", experiment="probe", uri=uri) as run:
            while True:
                position += 1
                count = 0

                def local(frame, event, arg, target=1 + (position - 1) * stride, at=position):
                    nonlocal count
                    # A frame that outlives its write (a generator resumed later) keeps the
                    # tracer of its own position: only the current position's counts.
                    if event == "line" and at == position:  # noqa: B023 (late: the current one)
                        count += 1
                        if count == target:
                            fired.append(f"{frame.f_code.co_filename}:{frame.f_lineno}")
                            signal.raise_signal(signal.SIGINT)
                    return local

                def calls(frame, event, arg):
                    name = frame.f_code.co_filename
                    return local if any(w in name for w in WATCHED) else None

                interrupted = False
                sys.settrace(calls)
                try:
                    run.log_metrics({"probe": float(position)}, step=position)
                except KeyboardInterrupt:
                    interrupted = True
                finally:
                    sys.settrace(None)
                if len(fired) < position:  # the write ran out of lines: every position tried
                    break
                print(f"{position} {fired[-1]} {interrupted}", file=sys.stderr, flush=True)
                lost += not interrupted
                # The interrupt was handled; a command that goes on needs no deadline.
                if errors._deadline is not None:
                    errors._deadline.cancel()
                    errors._deadline = None
                faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
                run.set_tags({"after": str(position)})
                faulthandler.cancel_dump_traceback_later()
            raise KeyboardInterrupt  # Ctrl-C in the run itself: it must end KILLED
    except KeyboardInterrupt:
        pass
    status = store_client(uri).get_run(run.id).info.status
    print(json.dumps({"positions": len(fired), "lost": lost, "status": status}), flush=True)
    return 0


if __name__ == "__main__":
    faulthandler.enable()
    options = sys.argv[2:]
    stride = int(options[options.index("--stride") + 1]) if "--stride" in options else 1
    sys.exit(main(sys.argv[1], "--library-default" in options, stride))
