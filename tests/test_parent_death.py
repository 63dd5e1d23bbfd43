"""A stage stops when the process that started it stops: ``dvc repro`` (or a shell) killed with
``kill -9`` or SIGTERM, as a CI timeout does, must not leave the stage running to finish later,
end its run FINISHED and overwrite what a newer run wrote. It stops as on SIGTERM: the run ends
KILLED and none of its outputs stay."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.data import write_split
from helpers.project import (
    command_env,
    runs_of,
    train_command,
    training_in_progress,
    wait_for_an_epoch,
    write_params,
)

DVC = Path(sys.executable).with_name("dvc")


def _default_sighup() -> None:
    """In the child: SIGHUP as a terminal leaves it, whatever this test runs under (under
    ``nohup`` a command deliberately outlives its parent)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it only waits for its parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs after its parent died"
        time.sleep(0.1)


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _child_pids(pid: int) -> list[int]:
    """The pids of ``pid``'s children (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def _training_pid(parent: int, timeout: float = 120) -> int:
    """The pid of the ``pipeline.train`` process below ``parent``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [parent]
        while pending:
            pid = pending.pop()
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"pipeline.train" in cmdline:
                return pid
            pending.extend(_child_pids(pid))
        time.sleep(0.1)
    raise AssertionError("no training process started")


def _long_training(folder: Path) -> None:
    write_split(folder / "data", n_train=5000)
    write_params(folder, "train.epochs=500", "train.batch_size=8")


def _assert_stopped_as_killed(folder: Path, uri: str) -> None:
    (run,) = runs_of(uri)
    assert run.info.status == "KILLED"
    assert "the process that started it" in run.data.tags["failure_reason"]
    assert not (folder / "models/model.npz").exists()
    assert not [p for p in folder.glob("reports/**/*") if p.is_file()]


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_training_stops_as_killed_when_the_shell_that_started_it_dies(tmp_path, store_uri, sig):
    uri = store_uri
    _long_training(tmp_path)
    # A shell that waits for the training, as `dvc repro` or a CI job's script does.
    shell = subprocess.Popen(
        ["sh", "-c", f"{shlex.join(train_command(tmp_path))} 2> {tmp_path / 'stderr'}; echo done"],
        env=command_env(uri),
        stdout=subprocess.DEVNULL,
        preexec_fn=_default_sighup,
    )
    try:
        training = _training_pid(shell.pid)
        wait_for_an_epoch(shell, uri)
        shell.send_signal(sig)
        shell.wait(timeout=30)
        _wait_gone(training)
    finally:
        shell.kill()
        for pid in _child_pids(shell.pid):
            os.kill(pid, signal.SIGKILL)
    _assert_stopped_as_killed(tmp_path, uri)


def _waiting_shell() -> str:
    """A shell that waits for the one command of ``sh -c`` instead of replacing itself with it
    (Debian's dash; bash replaces itself)."""
    shell = shutil.which("dash") or "/bin/sh"
    probe = subprocess.Popen([shell, "-c", "sleep 5"])
    try:
        time.sleep(0.3)
        waits = bool(_child_pids(probe.pid))
    finally:
        for pid in _child_pids(probe.pid):
            os.kill(pid, signal.SIGKILL)
        probe.kill()
        probe.wait()
    if not waits:
        pytest.skip(f"{shell} replaces itself with its command: no waiting shell to test with")
    return shell


def test_a_training_stops_when_the_launcher_of_its_sh_c_wrapper_dies(tmp_path, store_uri):
    """``dvc repro`` (and CI runners) start a command as ``$SHELL -c "..."`` (``/bin/sh`` when
    ``SHELL`` is unset); dash waits for the command, so killing the launcher leaves the shell
    running and the training's own parent alive: the training must still stop."""
    uri = store_uri
    _long_training(tmp_path)
    shell = _waiting_shell()
    command = f"{shlex.join(train_command(tmp_path))} 2> {tmp_path / 'stderr'}"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess; subprocess.run([{shell!r}, '-c', {command!r}])",
        ],
        env=command_env(uri),
        stdout=subprocess.DEVNULL,
        preexec_fn=_default_sighup,
    )
    try:
        training = _training_pid(launcher.pid)
        wrapper = _parent_of(training)
        assert wrapper != launcher.pid, "the training's parent should be the shell"
        wait_for_an_epoch(launcher, uri)
        launcher.kill()
        launcher.wait(timeout=30)
        assert _alive(wrapper), "the shell outlives its launcher (the case under test)"
        _wait_gone(training)
    finally:
        launcher.kill()
    _assert_stopped_as_killed(tmp_path, uri)
    (run,) = runs_of(uri)
    assert f"through the shell pid {wrapper}" in run.data.tags["failure_reason"]


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["waiting", "bash"])
def test_killing_dvc_repro_with_sigkill_stops_the_stage(tmp_path, store_uri, shell):
    """The real thing: `dvc repro` runs the stage; `kill -9` of dvc (a CI timeout) stops it,
    whether dvc's ``$SHELL`` waits for the stage (dash, and ``/bin/sh`` when ``SHELL`` is unset,
    as under many CI runners) or replaces itself with it (bash)."""
    uri = store_uri
    _long_training(tmp_path)
    command = shlex.join(
        ["python", "-m", "pipeline.train", "--params", "params.yaml", "--data", "data/mnist.npz"]
    )
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  train:\n"
        f"    cmd: {command}\n"
        "    deps: [data/mnist.npz]\n"
        "    outs: [models/model.npz]\n"
    )
    env = command_env(uri)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["SHELL"] = _waiting_shell() if shell == "waiting" else shutil.which("bash") or "/bin/bash"
    subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    dvc = subprocess.Popen(
        [str(DVC), "repro", "train"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_default_sighup,
    )
    try:
        training = _training_pid(dvc.pid)
        wait_for_an_epoch(dvc, uri, timeout=300)
        dvc.kill()
        dvc.wait(timeout=30)
        _wait_gone(training)
    finally:
        dvc.kill()
    _assert_stopped_as_killed(tmp_path, uri)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_default_sighup,
    )


def test_the_kernel_is_asked_to_send_sigterm_when_the_parent_ends():
    result = _python(
        "import ctypes, signal\n"
        "from pipeline.errors import stop_with_parent\n"
        "assert stop_with_parent()\n"
        "libc = ctypes.CDLL(None)\n"
        "sig = ctypes.c_int()\n"
        "libc.prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
        "print(sig.value == signal.SIGTERM)\n"
    )
    assert result.stdout.strip() == "True", result.stderr


def test_nohup_keeps_a_process_that_should_outlive_its_terminal():
    """``nohup python -m pipeline.train ... &`` and closing the terminal: kept on purpose."""
    result = _python(
        "import ctypes, signal\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does\n"
        "import pipeline.errors as errors\n"
        "print(errors.stop_with_parent())\n"
        "sig = ctypes.c_int()\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
        "print(sig.value)\n"
    )
    assert result.stdout.split() == ["False", "0"], result.stderr


def test_a_process_whose_parent_changed_stops_as_terminated():
    """The watcher (for other systems, and a parent gone before the kernel was asked): once
    this process has another parent than the one that started it, it stops with 143."""
    result = _python(
        "import time\n"
        "import pipeline.errors as errors\n"
        "errors.stop_with_parent(poll_seconds=0.05)\n"
        "errors._STARTED_BY = -1  # as if re-parented\n"
        "try:\n"
        "    time.sleep(60)\n"
        "except errors.Terminated as exc:\n"
        "    print(exc)\n"
        "    raise\n"
        "print('slept to the end')\n"
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "the process that started it (pid -1) ended" in result.stdout
    assert "slept to the end" not in result.stdout


def test_a_process_whose_parent_is_already_gone_does_not_start():
    result = _python(
        "import pipeline.errors as errors\n"
        "errors._STARTED_BY = -1\n"
        "errors.stop_with_parent()\n"
        "print('started')\n"
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "started" not in result.stdout


def test_a_second_sigterm_does_not_interrupt_the_ending_of_the_run(tmp_path, store_uri):
    """The kernel's SIGTERM on the parent's end and the watcher's, or a supervisor that
    repeats itself: the run still ends KILLED (a second Terminated raised while the run was
    being ended left it to MLflow's exit hook, which ended it FINISHED)."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with training_in_progress(tmp_path, store_uri, **pipes) as process:
        # Signals of one kind do not queue: keep sending while the process ends its run.
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            process.send_signal(signal.SIGTERM)
            time.sleep(0.01)
        _, stderr = process.communicate(timeout=60)
    # 143 from the command, or -15 when a signal lands after Python restored the default
    # handlers on its way out: terminated either way.
    assert process.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), stderr
    assert b"Traceback" not in stderr, stderr
    (run,) = runs_of(store_uri)
    assert run.info.status == "KILLED"
    assert not (tmp_path / "models/model.npz").exists()
