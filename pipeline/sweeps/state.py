"""What a sweep's points learn of their sweep: the file the parent leaves in the sweep folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("pipeline.sweep")

#: Written by the parent before any point starts: its MLflow run, store, experiment and name.
SWEEP_FILE = "sweep.json"


def sweep_dir_of(hydra_cfg: DictConfig) -> Path:
    """The sweep's folder (``hydra.sweep.dir``), absolute."""
    return (Path(hydra_cfg.runtime.cwd) / str(hydra_cfg.sweep.dir)).absolute()


def read_sweep_file(sweep_dir: Path) -> dict[str, Any]:
    """What the parent left for the points (empty without it)."""
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        log.warning("%s not found: this point is not linked to a sweep run", path)
        return {}
    return json.loads(path.read_text())
