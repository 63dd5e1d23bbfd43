"""Ctrl-C and SIGTERM end a command promptly, also when they arrive during a store write.

Python raises ``KeyboardInterrupt`` at whatever instruction runs when the signal arrives. Inside
MLflow or SQLAlchemy that can leave a SQLite transaction open or a lock held, and the next write
(the one that ends the run KILLED) then waits for it forever: interrupting real trainings at
random moments hung about one run in twenty that way. So every tracking-store call holds the
signal until it returns (:func:`pipeline.errors.deferred_signals`), and whatever else might keep a
process alive, it exits within :data:`pipeline.errors.INTERRUPT_GRACE_SECONDS` of the interrupt.

The fast tests check the mechanism in small subprocesses; the slow ones send SIGINT at every line
of a store write (``tests/helpers/interrupt_probe.py``) and interrupt real trainings at random
moments.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from helpers.data import write_split
from helpers.project import ROOT, command_env, runs_of, train_command, write_params

#: Generous: a hang shows as a timeout here, never a slow but finished run.
HANG = 120


def _default_sigint() -> None:
    """Children get Python's own SIGINT handling even when pytest runs in the background (where
    the shell starts it with SIGINT ignored, and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _python(code: str, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=HANG,
        preexec_fn=popen.pop("preexec_fn", _default_sigint),
        **popen,
    )


@pytest.mark.parametrize(("sig", "raised"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "143")])
def test_a_signal_inside_a_store_call_acts_when_the_call_returns(sig, raised):
    result = _python(
        f"""
        import signal
        from pipeline import errors
        errors.install_sigterm_handler()
        seen = []
        try:
            with errors.deferred_signals():
                with errors.deferred_signals():  # nested: held until the outer block ends
                    signal.raise_signal(signal.{sig})
                    seen.append("inner block went on")
                seen.append("outer block went on")
        except BaseException as exc:
            seen.append(getattr(exc, "code", None) or type(exc).__name__)
        errors.install_sigterm_handler()  # re-armed: a SIGTERM acts once, later ones wait
        try:
            signal.raise_signal(signal.{sig})  # outside a block: at once
            seen.append("not raised")
        except BaseException as exc:
            seen.append(getattr(exc, "code", None) or type(exc).__name__)
        print(seen)
        """
    )
    assert result.returncode == 0, result.stderr
    expected = ["inner block went on", "outer block went on", raised, raised]
    assert result.stdout.strip() == str(expected).replace("'143'", "143")


def test_a_second_interrupt_inside_a_store_call_exits_at_once():
    result = _python(
        """
        import signal
        from pipeline import errors
        errors.install_sigterm_handler()
        with errors.deferred_signals():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            print("went on")
        """
    )
    assert result.returncode == 130
    assert "went on" not in result.stdout
    assert "error: interrupted again during a tracking store call" in result.stderr


def test_a_process_that_does_not_end_after_an_interrupt_exits_within_the_grace_period():
    """Something keeps the process alive after Ctrl-C (here: a lock held for ever): it exits
    with 130 all the same, saying so."""
    result = _python(
        """
        import signal, threading
        from pipeline import errors
        errors.INTERRUPT_GRACE_SECONDS = 0.5
        errors.install_sigterm_handler(deadline=True)  # as every command does
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            threading.Event().wait()  # never set
        """
    )
    assert result.returncode == 130
    assert result.stdout.strip() == "interrupted"
    assert "still not ended 0.5 s after the interrupt" in result.stderr
    assert "the next command that opens the MLflow store ends the run KILLED" in result.stderr


def test_without_a_deadline_an_interrupted_process_may_go_on():
    """Code that catches the interrupt and goes on (a test, a library user) is not cut short."""
    result = _python(
        """
        import signal, time
        from pipeline import errors
        errors.INTERRUPT_GRACE_SECONDS = 0.2
        errors.install_sigterm_handler()
        try:
            signal.raise_signal(signal.SIGTERM)
        except SystemExit:
            pass
        time.sleep(1.0)
        print("went on")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "went on"


def test_a_sigint_the_process_was_started_to_ignore_stays_ignored():
    result = _python(
        """
        import signal
        from pipeline import errors
        errors.install_sigterm_handler()
        print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
        signal.raise_signal(signal.SIGINT)
        print("still here")
        """,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "still", "here"]


# ---------------------------------------------------------------------------- stress
@pytest.mark.slow
def test_sigint_at_every_20th_line_of_a_store_write_is_held_until_the_write_returns(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/helpers/interrupt_probe.py"), uri, "--stride", "20"],
        env=command_env(PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}"),
        capture_output=True,
        text=True,
        timeout=1800,
        preexec_fn=_default_sigint,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["positions"] > 100, report  # every 20th line of a metric write was tried
    assert report["lost"] == 0, report  # each interrupt reached the command
    assert report["status"] == "KILLED", report


@pytest.mark.slow
def test_interrupting_real_trainings_at_random_moments_always_ends_killed(tmp_path, empty_store):
    """Eight trainings, each sent SIGINT at a random moment while it logs (seeded): each ends
    with exit code 130, its run KILLED and no model, well before the hang timeout."""
    rng = random.Random(16)
    write_split(tmp_path / "data", n_train=200, n_val=50, n_test=50)
    write_params(tmp_path, "train.epochs=200", "train.batch_size=8")
    for attempt in range(8):
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        (folder / "data").symlink_to(tmp_path / "data")
        (folder / "params.yaml").symlink_to(tmp_path / "params.yaml")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        shutil.copy(empty_store, folder / "mlflow.db")
        returncode, stderr = _signalled_training(folder, uri, signal.SIGINT, rng.uniform(0.0, 2.0))
        assert returncode == 130, (attempt, stderr[-3000:])
        assert [r.info.status for r in runs_of(uri)] == ["KILLED"], attempt
        assert not (folder / "models/model.npz").exists()


def _signalled_training(folder, uri: str, sig: int, delay: float) -> tuple[int, str]:
    """Run the train stage on ``folder`` into the store ``uri``, send it ``sig`` ``delay``
    seconds after its run started, and wait for it to end: its exit status and stderr."""
    process = subprocess.Popen(
        train_command(folder),
        env=command_env(uri),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + HANG
        while not runs_of(uri):
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        time.sleep(delay)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=HANG)
    finally:
        process.kill()
    return process.returncode, stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_training_split_in_blocks_stops_at_a_signal_and_ends_killed(
    tmp_path, empty_store, sig, code
):
    """A training whose batches are computed in two blocks by two threads (``mlp.batch_parts``
    2): the signal reaches the main thread while it waits for a block, the run ends KILLED, no
    model is written and no helper thread keeps the process alive."""
    write_split(tmp_path / "data", n_train=1024, n_val=64, n_test=64)
    write_params(tmp_path, "train.epochs=500", "train.batch_size=128", "model.hidden_sizes=[256]")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    returncode, stderr = _signalled_training(tmp_path, uri, sig, 1.0)  # 1 s: into the epochs
    assert returncode == code, stderr[-3000:]
    runs = runs_of(uri)
    assert runs[0].data.tags["mlp.batch_parts"] == "2"
    assert [r.info.status for r in runs] == ["KILLED"]
    assert not (tmp_path / "models/model.npz").exists()
