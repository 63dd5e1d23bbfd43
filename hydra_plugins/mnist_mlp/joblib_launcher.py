"""Hydra's joblib launcher, where a worker killed from outside fails only its own point.

Hydra's launcher hands every point to one ``joblib.Parallel`` call on loky's process pool. When a
worker process dies without a word (``kill -9``, the out-of-memory killer, a crash in native
code), loky kills its other workers too and ``Parallel`` raises ``TerminatedWorkerError``: the
whole sweep stopped, and nothing said which point had died. :class:`JoblibLauncher`
(``hydra/launcher=local``) runs the same pool, with the same settings, and instead:

- each point notes, before it starts, which worker runs it (``<sweep dir>/.points/<job>.json``:
  the worker's pid, the job folder, what the summary needs of its config);
- when loky kills its workers after a crash, which of them were already dead (and their exit
  codes) is noted, so the points whose worker died first are known: each ends FAILED, with the
  worker's pid, how it died and why in its ``result.json`` (and in its child run, ended by the
  sweep's parent: :func:`pipeline.sweeps.parent.finish_sweep`);
- the points the crash stopped as bystanders, and those not started yet, run again on a fresh
  pool, until every point has either finished or failed.

If a crash leaves nothing to blame (no point had started), the points it stopped run again; a
second crash without progress fails them all, with the crash's message: the launcher never loops.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import (
    JoblibLauncher as HydraJoblibLauncher,
)
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

#: Where the points note which worker runs them (inside the sweep folder).
POINTS_DIR = ".points"


class JoblibLauncher(HydraJoblibLauncher):
    """Hydra's joblib launcher (same keys: ``n_jobs``, ``verbose``, ...), surviving dead workers."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.task_function is not None
        assert self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        settings = dict(self.joblib)
        settings["backend"] = "loky"  # Hydra's choice: threads do not work with Hydra
        _core.process_joblib_cfg(settings)
        log.info(
            "Joblib.Parallel(%s) is launching %d jobs in %s",
            ",".join(f"{k}={v}" for k, v in settings.items()),
            len(job_overrides),
            sweep_dir,
        )
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))

        jobs = {initial_job_idx + i: list(o) for i, o in enumerate(job_overrides)}
        results: dict[int, JobReturn] = {}
        stalled = 0
        while len(results) < len(jobs):
            pending = [num for num in jobs if num not in results]
            for num in pending:  # notes of an earlier round's bystanders: not this round's
                (sweep_dir / POINTS_DIR / f"{num}.json").unlink(missing_ok=True)
            done = len(results)
            try:
                with _workers_noted() as workers:
                    for num, ret in self._run(settings, pending, jobs, sweep_dir):
                        results[num] = ret
            except Exception as exc:
                if type(exc).__name__ != "TerminatedWorkerError":
                    raise
                unfinished = [num for num in pending if num not in results]
                dead = _died_from_outside(sweep_dir, unfinished, workers)
                log.error("a worker process died: %s", _one_line(exc))
                if not dead:
                    stalled = 0 if len(results) > done else stalled + 1
                    if stalled < 2:
                        continue  # no point to blame: run the stopped ones again
                    dead = {num: _note(sweep_dir, num) for num in unfinished}
                stalled = 0
                for num, note in dead.items():
                    results[num] = self._failed(num, jobs[num], note, exc)
        return [results[num] for num in sorted(jobs)]

    def _run(
        self,
        settings: dict[str, Any],
        pending: list[int],
        jobs: dict[int, list[str]],
        sweep_dir: Path,
    ) -> Iterator[tuple[int, JobReturn]]:
        """Run ``pending`` on one pool; yield each ``(job number, JobReturn)`` as it ends."""
        from joblib import Parallel, delayed

        singleton_state = Singleton.get_state()
        parallel = Parallel(**settings, return_as="generator_unordered")
        yield from parallel(
            delayed(execute_job)(
                num,
                jobs[num],
                self.hydra_context,
                self.config,
                self.task_function,
                singleton_state,
                str(sweep_dir),
            )
            for num in pending
        )

    def _failed(
        self, num: int, overrides: list[str], note: dict[str, Any], exc: BaseException
    ) -> JobReturn:
        """The point ``num`` whose worker died: its ``result.json`` and its JobReturn (completed,
        so that the sweep goes on, with the row of a failed point as its value)."""
        from pipeline import cli
        from pipeline.files import write_json
        from pipeline.names import RESULT_FILE
        from pipeline.reporting.sweep_summary import FAILED
        from pipeline.sweeps.points import is_optuna
        from pipeline.sweeps.state import read_sweep_file

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        pid, code = note.get("pid"), note.get("exit_code")
        how = _exit(code) if code is not None else "died"
        reason = (
            f"WorkerDied: the worker process running this point (pid {pid}) was killed from "
            f"outside ({how}), as the out-of-memory killer or `kill -9` does; the other points "
            "went on"
            if pid is not None
            else f"WorkerDied: a worker process died before this point could end: {_one_line(exc)}"
        )
        log.error("point #%d %s failed: %s", num, " ".join(overrides), reason)
        row = {
            **(note.get("describe") or {}),
            "job": num,
            "overrides": list(note.get("overrides") or filter_overrides(overrides)),
            "status": FAILED,
            "reason": reason,
            "exit_code": cli.FAILED,
            "run_id": None,
            "parent_run_id": read_sweep_file(sweep_dir).get("parent_run_id"),
            "pid": pid,
            "host": socket.gethostname(),
            "job_dir": note.get("job_dir"),
            "seconds": None,
            "worker_died": True,
        }
        if note.get("job_dir"):
            write_json(Path(note["job_dir"]) / RESULT_FILE, row)
        value = None if is_optuna(self.config.hydra) else row
        return JobReturn(
            overrides=list(overrides),
            status=JobStatus.COMPLETED,
            _return_value=value,
            task_name=str(self.config.hydra.job.name),
        )


def execute_job(
    num: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    sweep_dir: str,
) -> tuple[int, JobReturn]:
    """In the worker: note who runs the point, then run it as Hydra's joblib launcher does."""
    from hydra.core.utils import run_job

    from pipeline.sweeps.points import _describe as describe
    from pipeline.sweeps.points import plain_config

    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{num}"
        sweep_config.hydra.job.num = num
    HydraConfig.instance().set_config(sweep_config)
    job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    try:
        described = describe(plain_config(sweep_config))
    except Exception:  # an invalid config: the point itself will say so
        described = {}
    _write_note(
        Path(sweep_dir),
        num,
        {
            "pid": os.getpid(),
            "job_dir": str(job_dir.absolute()),
            "overrides": list(sweep_config.hydra.overrides.task),
            "describe": described,
        },
    )
    ret = run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    return num, ret


def _write_note(sweep_dir: Path, num: int, note: dict[str, Any]) -> None:
    folder = sweep_dir / POINTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{num}.json.{os.getpid()}"
    tmp.write_text(json.dumps(note))
    os.replace(tmp, folder / f"{num}.json")


def _note(sweep_dir: Path, num: int) -> dict[str, Any]:
    try:
        return json.loads((sweep_dir / POINTS_DIR / f"{num}.json").read_text())
    except (OSError, ValueError):
        return {}


def _died_from_outside(
    sweep_dir: Path, unfinished: list[int], workers: dict[int, int | None]
) -> dict[int, dict[str, Any]]:
    """The unfinished points that had started in a worker that was already dead when loky
    killed the others (with its exit code in ``exit_code``)."""
    dead = {}
    for num in unfinished:
        note = _note(sweep_dir, num)
        pid = note.get("pid")
        if pid is not None and pid in workers and workers[pid] is not None:
            dead[num] = {**note, "exit_code": workers[pid]}
    return dead


_LOCK = threading.Lock()


@contextmanager
def _workers_noted() -> Iterator[dict[int, int | None]]:
    """What loky's kills found once a worker had died (it then kills every worker): pid ->
    ``None`` for a worker still alive, a bystander; pid -> exit code for one already dead."""
    from joblib.externals.loky import process_executor

    found: dict[int, int | None] = {}
    original: Callable[..., Any] = process_executor.kill_process_tree

    def noting(process: Any, *args: Any, **kwargs: Any) -> Any:
        pid = getattr(process, "pid", None)
        if pid is not None:
            try:
                found[pid] = process.exitcode  # None while it runs
            except Exception:
                found[pid] = None
        return original(process, *args, **kwargs)

    with _LOCK:
        process_executor.kill_process_tree = noting
        try:
            yield found
        finally:
            process_executor.kill_process_tree = original


def _exit(code: int) -> str:
    """A process's exit code in words: ``-9`` -> ``"signal SIGKILL"``."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
