"""What a run records about where it came from: its config as parameters, and provenance tags
(git commit, dataset digests, library versions, platform, the DVC experiment)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.tracking.store import project_root


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


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def run_tags(root: Path | None, data_digests: Mapping[str, str] | None, stage: str) -> dict:
    """Tags for a run: ``git.commit`` (``"unknown"`` outside a git repository), ``git.dirty``,
    ``data.sha256.<name>`` per dataset file, ``stage``, ``version.<package>`` for the libraries
    that shape results (read from package metadata; nothing is imported), ``platform``, and the
    DVC experiment's name and baseline commit when DVC runs the stage."""
    root = Path(root) if root is not None else project_root()
    head = _git(root, "rev-parse", "HEAD")
    commit = head.strip() if head else "unknown"
    tags: dict[str, str] = {"stage": stage, "git.commit": commit}
    if head:
        tags["mlflow.source.git.commit"] = commit
        status = _git(root, "status", "--porcelain")
        if status is not None:
            tags["git.dirty"] = "true" if status.strip() else "false"
    for name, digest in (data_digests or {}).items():
        tags[f"data.sha256.{name}"] = str(digest)
    tags["version.python"] = platform.python_version()
    versions = {
        "numpy": ("numpy",),
        "mlflow": ("mlflow", "mlflow-skinny"),
        "hydra-core": ("hydra-core",),
        "dvc": ("dvc",),
        "tensorflow": ("tensorflow", "tensorflow-cpu"),
        "keras": ("keras",),
    }
    for key, distributions in versions.items():
        if version := _version(*distributions):
            tags[f"version.{key}"] = version
    tags["platform"] = platform.platform()
    for env, tag in (
        ("DVC_EXP_NAME", "dvc.exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc.baseline_rev"),
    ):
        if value := os.environ.get(env):
            tags[tag] = value
    return tags


def config_yaml(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
