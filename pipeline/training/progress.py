"""A tqdm progress bar for :meth:`mlp.MLP.fit`: one bar per epoch, quiet when not a terminal."""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

import mlp


class ProgressBar(mlp.Callback):
    """One bar of ``steps_per_epoch`` steps per epoch showing the running mean batch loss; at the
    epoch's end the bar stays as a summary line with the epoch's loss, accuracy and, with a
    validation set, ``val_loss`` and ``val_acc``.

    ``on_batch_end`` runs every step, so it only adds to two numbers and touches the bar every
    ``update_every`` steps. ``disable=None``: disabled when ``file`` (default stderr) is not a TTY.
    """

    def __init__(
        self, update_every: int = 20, file: IO[str] | None = None, disable: bool | None = None
    ):
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.update_every = update_every
        self.file = file
        self.disable = disable
        self._bar: tqdm | None = None
        self._epochs = self._steps = 0
        self._shown = 0
        self._loss_sum = 0.0
        self._off = True

    def _disabled(self) -> bool:
        if self.disable is not None:
            return self.disable
        stream = self.file if self.file is not None else sys.stderr
        try:
            return not stream.isatty()
        except (AttributeError, ValueError):
            return True

    def on_train_begin(self, model: Any, info: dict[str, int]) -> None:
        self._epochs, self._steps = info["epochs"], info["steps_per_epoch"]
        self._off = self._disabled()

    def on_epoch_begin(self, epoch: int) -> None:
        self._shown, self._loss_sum = 0, 0.0
        if self._off:
            return
        width = len(str(self._epochs))
        self._bar = tqdm(
            total=self._steps,
            desc=f"epoch {epoch:>{width}}/{self._epochs}",
            unit="step",
            file=self.file,
            leave=True,
            dynamic_ncols=True,
        )

    def on_batch_end(self, epoch: int, step: int, loss: float) -> None:
        self._loss_sum += loss
        if step % self.update_every or self._bar is None:
            return
        self._bar.update(step - self._shown)
        self._shown = step
        self._bar.set_postfix(loss=f"{self._loss_sum / step:.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        bar, self._bar = self._bar, None
        if bar is None:
            return
        bar.update(self._steps - self._shown)
        summary = {"loss": f"{logs['loss']:.4f}", "acc": f"{logs['accuracy']:.4f}"}
        if "val_loss" in logs:
            summary["val_loss"] = f"{logs['val_loss']:.4f}"
            summary["val_acc"] = f"{logs['val_accuracy']:.4f}"
        bar.set_postfix(summary, refresh=False)
        bar.close()

    def on_train_end(self, history: dict[str, list[float]]) -> None:
        if self._bar is not None:  # training stopped mid-epoch
            self._bar.close()
            self._bar = None
