"""What a sweep's points learn of their sweep: its MLflow parent run, store, experiment and name,
carried by each job itself.

The parent adds them to the master config's Hydra overrides as ``hydra.job.env_set`` entries
(:func:`add_to_jobs`) before the launcher composes any job; every launcher composes each job's
config from those overrides, and sends that config wherever the job runs (a joblib worker, a Ray
task on another node, a SLURM job). Hydra also exports them as environment variables while the
job runs. Nothing is written to the sweep folder, which a worker on another machine may not see.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, read_write

log = logging.getLogger("pipeline.sweep")

#: What the parent tells its points -> the environment variable it travels in.
JOB_ENV = {
    "parent_run_id": "SWEEP_PARENT_RUN_ID",
    "tracking_uri": "SWEEP_TRACKING_URI",
    "experiment": "SWEEP_EXPERIMENT",
    "name": "SWEEP_NAME",
}
_ENV_KEY = "hydra.job.env_set."


def sweep_dir_of(hydra_cfg: DictConfig) -> Path:
    """The sweep's folder (``hydra.sweep.dir``), absolute."""
    return (Path(hydra_cfg.runtime.cwd) / str(hydra_cfg.sweep.dir)).absolute()


def task_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The job's command-line overrides as written: never resolved, so a value such as
    ``seed=${nope}`` stays text here and is reported by the config's validation instead."""
    return [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]


def quote(value: str) -> str:
    """``value`` as a quoted Hydra override value that composes back to exactly ``value``: no
    grammar character, quote, backslash or ``${`` interpolation in it is interpreted.

    Two layers read it: OmegaConf (``\\${`` is a literal ``${``; backslashes before it are
    doubled) and Hydra's quoted strings (``\\'`` is a quote; backslashes before a quote or the
    end are doubled; others are literal)."""
    value = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    value = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    value = re.sub(r"(\\*)$", lambda m: m.group(1) * 2, value)
    return f"'{value}'"


def add_to_jobs(config: DictConfig, sweep: dict[str, Any]) -> None:
    """Make every job the launcher composes from ``config`` (the master config of a multirun)
    carry ``sweep`` (the keys of :data:`JOB_ENV`) in its ``hydra.job.env_set``. Entries of an
    earlier sweep on the same config are replaced."""
    overrides = config.hydra.overrides
    kept = [
        o
        for o in overrides.hydra
        if not any(str(o).lstrip("+").startswith(_ENV_KEY + env) for env in JOB_ENV.values())
    ]
    added = [
        f"++{_ENV_KEY}{env}={quote(str(sweep[key]))}"
        for key, env in JOB_ENV.items()
        if sweep.get(key) is not None
    ]
    with read_write(overrides):
        overrides.hydra = [*kept, *added]


def sweep_of_job(hydra_cfg: DictConfig) -> dict[str, Any]:
    """What the parent told this job (empty when it was started outside a sweep)."""
    env = OmegaConf.select(hydra_cfg, "job.env_set") or {}
    found = {key: env.get(name) for key, name in JOB_ENV.items() if env.get(name) is not None}
    if not found.get("parent_run_id"):
        log.warning("no sweep run in this job's config: the point is not linked to one")
    return found
