"""Early stopping: end training when a validation metric has stopped improving.

``MLP.fit(..., validation=..., early_stopping=EarlyStopping(...))`` asks it after every epoch
whether to go on. With ``restore_best`` the network ends with the weights of its best epoch. The
history then holds ``best_epoch`` (the epoch with the best value of the monitored metric),
``stopped_epoch`` (the last epoch trained: less than ``epochs`` when it stopped early) and
``restored_best`` (whether the weights are the best epoch's).
"""

from __future__ import annotations

import math

import numpy as np

from mlp import rules

#: The metrics that can be watched, and whether larger is better.
MONITORS = {"val_accuracy": True, "val_loss": False}


class EarlyStopping:
    """Stop after ``patience`` epochs without an improvement of ``monitor`` by more than
    ``min_delta``; with ``restore_best``, go back to the best epoch's weights at the end."""

    def __init__(
        self,
        monitor: str = "val_accuracy",
        patience: int = 10,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ):
        self.monitor = rules.one_of("monitor", monitor, MONITORS)
        self.patience = rules.positive_int("patience", patience)
        self.min_delta = rules.non_negative("min_delta", min_delta)
        self.restore_best = bool(restore_best)
        self._reset()

    def config(self) -> dict:
        return {
            "monitor": self.monitor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "restore_best": self.restore_best,
        }

    def __repr__(self) -> str:
        return "EarlyStopping(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    def _reset(self) -> None:
        self.best = -math.inf if MONITORS[self.monitor] else math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.wait = 0
        self._best_params: list[np.ndarray] | None = None

    def begin(self) -> None:
        """Forget any earlier training (``fit`` calls it first)."""
        self._reset()

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if MONITORS[self.monitor]:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, epoch: int, logs: dict[str, float], params: list[np.ndarray]) -> bool:
        """Record ``epoch``'s row; keep a copy of ``params`` when it is the best so far. Returns
        whether training should stop."""
        if self.monitor not in logs:
            raise ValueError(f"early stopping watches {self.monitor!r}, which fit did not measure")
        self.stopped_epoch = epoch
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                if self._best_params is None:
                    self._best_params = [p.copy() for p in params]
                else:
                    for saved, p in zip(self._best_params, params, strict=True):
                        np.copyto(saved, p)
            return False
        self.wait += 1
        return self.wait >= self.patience

    def end(self, params: list[np.ndarray], history: dict) -> None:
        """Restore the best weights (with ``restore_best``) and note the epochs in ``history``."""
        restored = self.restore_best and self._best_params is not None
        if restored:
            for p, saved in zip(params, self._best_params, strict=True):
                np.copyto(p, saved)
        history["best_epoch"] = self.best_epoch
        history["stopped_epoch"] = self.stopped_epoch
        history["restored_best"] = restored
        self._best_params = None
