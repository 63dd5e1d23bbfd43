"""The launchers a sweep runs on (``conf/hydra/launcher/``) and what each needs before any point
starts: its Hydra plugin importable, and for ``hydra/launcher=ray`` a Ray cluster that answers.

Both checks run in the main process before the parent run starts, so a sweep that cannot run
stops with one ``error:`` line and exit code 2, tracking nothing.
"""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.config import ConfigError
from pipeline.errors import UsageError

#: Launcher classes whose plugin is an optional extra -> how to install it.
EXTRAS = {
    "RayLauncher": "make cluster-install (Ray and Hydra's Ray launcher plugin, pinned)",
}
#: Where ``ray start --head`` leaves the address of the cluster this machine belongs to.
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


class NoCluster(UsageError):
    """``hydra/launcher=ray`` with no Ray cluster to join."""


def check(hydra_cfg: DictConfig) -> str:
    """The launcher's class name, once its plugin is importable and, for a Ray launcher that
    joins a cluster, once that cluster answers; a :class:`UsageError` naming what to do
    otherwise."""
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_") or "")
    module, _, attribute = target.rpartition(".")
    choice = (OmegaConf.select(hydra_cfg, "runtime.choices") or {}).get("hydra/launcher")
    try:
        getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        install = EXTRAS.get(attribute, "its Hydra plugin (conf/hydra/launcher/, the README)")
        raise ConfigError(
            f"hydra/launcher={choice}: cannot load {target}; install {install}"
        ) from None
    if attribute == "RayLauncher":
        address = OmegaConf.select(hydra_cfg, "launcher.ray.init.address")
        if address not in (None, "local"):  # else Ray starts a private instance
            check_ray_cluster(str(address), choice)
    return attribute


def ray_address(address: str) -> str | None:
    """``host:port`` of the Ray cluster that ``ray.init(address=address)`` would join: ``auto``
    is ``RAY_ADDRESS`` or the cluster ``ray start`` started or joined on this machine. ``None``
    when there is none (or ``address`` is a ``ray://`` client address, left to Ray)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address or address == "auto":
            try:
                address = RAY_CURRENT_CLUSTER.read_text().strip()
            except OSError:
                return None
    if "://" in address:
        return None if not address.startswith("ray://") else address
    return address or None


def check_ray_cluster(address: str, choice: str | None = "ray", timeout: float = 3.0) -> None:
    """Raise :class:`NoCluster` unless the Ray cluster ``address`` names accepts a connection."""
    found = ray_address(address)
    hint = (
        "start one with `ray start --head` (or set RAY_ADDRESS=host:port), or run the points "
        "on a private Ray instance with hydra/launcher=ray_local"
    )
    if found is None:
        raise NoCluster(f"hydra/launcher={choice}: no running Ray cluster found; {hint}")
    if found.startswith("ray://"):
        return  # a Ray client address: Ray itself says when it does not answer
    host, _, port = found.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError):
        raise NoCluster(
            f"hydra/launcher={choice}: the Ray cluster at {found} does not answer; {hint}"
        ) from None
