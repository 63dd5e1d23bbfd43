"""What a run records about where it came from: the knobs of its config as parameters, and
provenance tags (git commit, dataset digests, library versions, platform, the DVC experiment, and
the process that runs it)."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.names import EARLY_STOPPING_FIELDS, OPTIMIZER_UNUSED, PARAM_KEYS, SCHEDULE_USED
from pipeline.tracking.store import project_root

#: Tags naming the process that runs a run (see :mod:`pipeline.tracking.reaper`).
HOST_TAG, PID_TAG, STARTED_TAG = "host", "pid", "process.started"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}``. Strings stay as they are; numbers, booleans and
    ``None`` as JSON (``0.1``, ``true``, ``null``); lists as JSON (``[784, 32, 16, 10]``)."""
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=_json_default)
    return flat


def knob_params(config: Mapping[str, Any], also: Sequence[str] = ()) -> dict[str, str]:
    """The parameters of a run of ``config`` (a validated config as a nested dict): the keys of
    :data:`pipeline.names.PARAM_KEYS`, and of ``optimizer``, ``train.schedule`` and
    ``train.early_stopping`` only the fields that act; plus the keys (or sections) ``also`` names,
    such as the keys a sweep varies (fields that do not act stay out all the same)."""
    flat = flatten(config)
    unused = _unused_fields(config)

    def chosen(key: str, prefixes: Sequence[str]) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    return {
        key: value
        for key, value in flat.items()
        if (chosen(key, PARAM_KEYS) or chosen(key, also)) and key not in unused
    }


def _unused_fields(config: Mapping[str, Any]) -> set[str]:
    """The flattened keys of ``config`` that its choices make inert: the chosen optimiser's unused
    fields, the fields of schedules not chosen, early stopping's settings while it is off."""
    optimizer = str(config.get("optimizer", {}).get("name"))
    unused = {f"optimizer.{name}" for name in OPTIMIZER_UNUSED.get(optimizer, ())}
    train = config.get("train", {})
    schedule = train.get("schedule") or {}
    used = SCHEDULE_USED.get(str(schedule.get("name")))
    if used is not None:
        unused |= {f"train.schedule.{k}" for k in schedule if k != "name" and k not in used}
    if not (train.get("early_stopping") or {}).get("enabled", True):
        unused |= {f"train.early_stopping.{k}" for k in EARLY_STOPPING_FIELDS}
    return unused


def _json_default(value: Any) -> Any:
    """NumPy scalars and arrays as Python values; anything else as its ``str``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


#: The libraries that shape results (tag ``version.<key>``) and the distributions that install
#: each: TensorFlow comes as ``tensorflow`` or ``tensorflow-cpu``, MLflow as ``mlflow`` or
#: ``mlflow-skinny``.
VERSIONED = {
    "numpy": ("numpy",),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "hydra-core": ("hydra-core",),
    "dvc": ("dvc",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
}


def installed_version(key: str) -> str | None:
    """The installed version of the library ``key`` of :data:`VERSIONED` (or of the
    distribution of that name), from package metadata; ``None`` when it is not installed."""
    return _version(*VERSIONED.get(key, (key,)))


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def run_tags(root: Path | None, data_digests: Mapping[str, str] | None, stage: str) -> dict:
    """Tags for a run: ``git.commit`` (``"unknown"`` outside a git repository), ``git.dirty``
    (whether files differ from that commit, the pipeline's own outputs aside:
    :func:`pipeline_outputs`), ``data.sha256.<name>`` per dataset file, ``stage``,
    ``version.<package>`` for the libraries that shape results (read from package metadata;
    nothing is imported), ``platform``, the process (:func:`process_tags`), and the DVC
    experiment's name and baseline commit when DVC runs the stage."""
    root = Path(root) if root is not None else project_root()
    head = _git(root, "rev-parse", "HEAD")
    commit = head.strip() if head else "unknown"
    tags: dict[str, str] = {"stage": stage, "git.commit": commit}
    if head:
        tags["mlflow.source.git.commit"] = commit
        status = _git(root, "status", "--porcelain", "-z", "--untracked-files=all")
        if status is not None:
            changed = changed_paths(status)
            outputs = pipeline_outputs(root)
            dirty = [p for p in changed if not any(_is_within(p, out) for out in outputs)]
            tags["git.dirty"] = "true" if dirty else "false"
    for name, digest in (data_digests or {}).items():
        tags[f"data.sha256.{name}"] = str(digest)
    tags["version.python"] = platform.python_version()
    for key, distributions in VERSIONED.items():
        if version := _version(*distributions):
            tags[f"version.{key}"] = version
    tags["platform"] = platform.platform()
    tags.update(process_tags())
    for env, tag in (
        ("DVC_EXP_NAME", "dvc.exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc.baseline_rev"),
    ):
        if value := os.environ.get(env):
            tags[tag] = value
    return tags


def changed_paths(porcelain_z: str) -> list[str]:
    """The paths ``git status --porcelain -z`` lists (both sides of a rename)."""
    entries = porcelain_z.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if "R" in entry[:2] or "C" in entry[:2]:  # the original path follows
            paths.append(entries[i])
            i += 1
    return paths


def pipeline_outputs(root: Path) -> list[str]:
    """What ``dvc repro`` itself writes in the repository: every stage's ``outs``, ``metrics``
    and ``plots`` in ``dvc.yaml``, and ``dvc.lock``. DVC deletes a stage's outputs before it
    runs it, so they are no sign of a change made by hand."""
    import yaml

    outputs = ["dvc.lock"]
    try:
        stages = yaml.safe_load((root / "dvc.yaml").read_text()).get("stages") or {}
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return outputs
    for stage in stages.values():
        for section in ("outs", "metrics", "plots"):
            for entry in (stage or {}).get(section) or []:
                name = next(iter(entry)) if isinstance(entry, dict) else entry
                outputs.append(str(name).rstrip("/"))
    return outputs


def _is_within(path: str, output: str) -> bool:
    path = path.rstrip("/")
    return path == output or path.startswith(output + "/")


def process_tags() -> dict[str, str]:
    """``host``, ``pid`` and ``process.started`` (the process's start time, UTC, ISO 8601):
    enough to tell later whether the process that runs a run is still alive."""
    import psutil

    pid = os.getpid()
    started = datetime.datetime.fromtimestamp(psutil.Process(pid).create_time(), datetime.UTC)
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        STARTED_TAG: started.isoformat(timespec="milliseconds"),
    }


def config_yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
