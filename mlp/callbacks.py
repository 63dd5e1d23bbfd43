"""Hooks into :meth:`mlp.MLP.fit`: progress bars, tracking, early stopping.

Subclass :class:`Callback` and override what you need. ``on_batch_end`` is only called for
callbacks that override it, so the training loop pays nothing for hooks nobody uses. Setting
``model.stop_training = True`` ends training after the current epoch.
"""

from __future__ import annotations

from typing import Any


class Callback:
    def on_train_begin(self, model: Any, info: dict[str, int]) -> None:
        """``info``: ``epochs``, ``steps_per_epoch``, ``n_samples``, ``batch_size``."""

    def on_epoch_begin(self, epoch: int) -> None:
        """``epoch`` is 1-based."""

    def on_batch_end(self, epoch: int, step: int, loss: float) -> None:
        """``step`` is 1-based; ``loss`` is the batch's mean loss."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """``logs``: the epoch's row of the history."""

    def on_train_end(self, history: dict[str, list[float]]) -> None:
        """Called once training finished (not when it raised)."""
