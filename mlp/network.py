"""The multilayer perceptron: a stack of dense layers trained by backpropagation.

Notation follows seed 002 with row-major batches (one example per row, as NumPy wants it):
for layers ``l = 1..N`` with sizes ``[n_0, ..., n_N]``,

    Z^l = A^{l-1} @ W^l + b^l,    A^l = f_l(Z^l),    A^0 = X

where ``W^l`` has shape ``(n_{l-1}, n_l)`` (the transpose of the seed's ``n_l x n_{l-1}``) and
``b^l`` shape ``(n_l,)``. Python lists are 0-based, so ``weights[l]`` is ``W^{l+1}``.

Backpropagation for a batch of ``M`` examples (seed 002, BP1.2-BP4.2), cost = mean loss:

    Delta^N   = dC/dZ^N                               (from the loss; (P - Y) / M for softmax + CE)
    Delta^l   = (Delta^{l+1} @ W^{l+1}.T) * f_l'(Z^l)  (f' written in terms of the output A^l)
    dC/dW^l   = A^{l-1}.T @ Delta^l,    dC/db^l = sum over rows of Delta^l

All errors are computed before any parameter is updated.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlp import activations as _activations
from mlp import initializers as _initializers
from mlp import losses as _losses
from mlp import regularization, rules
from mlp.callbacks import Callback
from mlp.optimizers import SGD, Optimizer
from mlp.parallel import PartRunner, part_bounds
from mlp.schedules import Schedule
from mlp.stopping import EarlyStopping

#: The floating-point types a network computes in (``MLP(dtype=...)``).
DTYPES = ("float32", "float64")
_FORMAT_VERSION = 1


class DivergenceError(FloatingPointError):
    """Training blew up: a non-finite loss, or weights or activations that are no longer finite
    or have grown beyond :func:`overflow_limit`. ``epoch`` and ``step`` are 1-based; ``loss`` is
    the loss when it was the cause, else the epoch's (finite) loss; ``reason`` says what
    happened."""

    def __init__(
        self, epoch: int, step: int, steps_per_epoch: int, loss: float, reason: str | None = None
    ):
        self.epoch, self.step, self.steps_per_epoch, self.loss = epoch, step, steps_per_epoch, loss
        self.reason = reason if reason is not None else f"the loss became {loss}"
        FloatingPointError.__init__(
            self,
            f"training diverged: {self.reason} at epoch {epoch}, step {step} of "
            f"{steps_per_epoch}; the weights are no longer usable. Try a smaller learning rate, "
            "another initialisation, or inputs scaled to a small range.",
        )

    def __reduce__(self):  # picklable, so it can cross process boundaries (parallel sweeps)
        return (type(self), (self.epoch, self.step, self.steps_per_epoch, self.loss, self.reason))


def overflow_limit(dtype: Any) -> float:
    """The largest magnitude a weight or activation may reach before training counts as
    diverged: ``1 / eps`` of ``dtype`` (2**23 for float32, 2**52 for float64), where the spacing
    of the floating-point numbers reaches 1 and a step no longer moves a weight by its size."""
    return float(1.0 / np.finfo(dtype).eps)


def _largest_magnitude(arrays: Sequence[np.ndarray]) -> float:
    """max |x| over ``arrays`` (NaN if any holds a NaN), without a temporary array."""
    largest = 0.0
    for a in arrays:
        if a.size:
            largest = max(largest, abs(float(a.max())), abs(float(a.min())))
            if largest != largest:
                return largest
    return largest


class MLP:
    """A dense feed-forward network ``[n_0, ..., n_N]`` with one activation per layer.

    Args:
        layer_sizes: units per layer, input first; at least two entries, all >= 1.
        activations: one name per non-input layer (``tanh``, ``sigmoid``, ``relu``, ``linear``;
            ``softmax`` for the output layer only). Default: ``tanh`` hidden layers and a
            ``softmax`` output.
        loss: ``cross_entropy`` (softmax output only) or ``sse``.
        init: ``xavier_normal``, ``xavier_uniform``, ``he_normal`` or ``he_uniform``
            (``glorot_normal`` and ``glorot_uniform`` are the Xavier ones by their other name).
        seed: seeds the network's one ``np.random.Generator`` (initial weights, then shuffling).
        dtype: ``float32`` (default) or ``float64``, or what NumPy reads as one of them
            (``np.float64``, ``"f8"``).

    Bad layer sizes, an unknown name or dtype raise :class:`mlp.ParameterError` naming the
    argument; activations that do not fit the layers (their count, softmax in a hidden layer,
    cross-entropy without a softmax output) a ``ValueError``.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activations: Sequence[str] | None = None,
        loss: str = "cross_entropy",
        init: str = "xavier_normal",
        seed: int | None = 0,
        dtype: str = "float32",
    ):
        sizes = list(layer_sizes)
        if len(sizes) < 2:
            raise rules.ParameterError(
                "layer_sizes", sizes, "needs at least an input and an output size"
            )
        try:
            self.layer_sizes = [rules.positive_int("layer_sizes", n) for n in sizes]
        except rules.ParameterError:
            raise rules.ParameterError("layer_sizes", sizes, "must hold integers >= 1") from None
        n_layers = len(sizes) - 1
        if activations is None:
            activations = ["tanh"] * (n_layers - 1) + ["softmax"]
        elif isinstance(activations, str):
            raise ValueError(
                f"activations must be a list with one name per layer ({n_layers}), "
                f"got the string {activations!r}"
            )
        activations = list(activations)
        if len(activations) != n_layers:
            raise ValueError(
                f"{n_layers} layers after the input need {n_layers} activations, "
                f"got {len(activations)}: {activations!r}"
            )
        self._acts = [_activations.get(name) for name in activations]
        for position, act in enumerate(self._acts[:-1], start=1):
            if not act.elementwise:
                raise ValueError(
                    f"activation {act.name!r} is for the output layer only (hidden layer "
                    f"{position}); choose one of {', '.join(_activations.HIDDEN_ACTIVATIONS)}"
                )
        self.activations = activations
        self._loss = _losses.get(loss)
        self._loss.check_output_activation(self._acts[-1])
        self.loss_name = loss
        initializer = _initializers.get(init)
        self.init = init
        self.dtype = np.dtype(rules.one_of("dtype", _dtype_name(dtype), DTYPES))
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True):
            self.weights.append(initializer(self.rng, fan_in, fan_out).astype(self.dtype))
            self.biases.append(np.zeros(fan_out, dtype=self.dtype))
        self.stop_training = False

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """What it takes to rebuild this network (weights aside)."""
        return {
            "layer_sizes": self.layer_sizes,
            "activations": self.activations,
            "loss": self.loss_name,
            "init": self.init,
            "seed": self.seed,
            "dtype": self.dtype.name,
        }

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.layer_sizes))
        return f"MLP({sizes}, activations={self.activations}, loss={self.loss_name!r})"

    @property
    def n_params(self) -> int:
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases, strict=True))

    # ------------------------------------------------------------------ input checks
    def _check_X(self, X: Any, name: str = "X") -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (examples, features), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{name} is empty: it has no examples")
        if X.shape[1] != self.layer_sizes[0]:
            raise ValueError(
                f"{name} has {X.shape[1]} features per example but the input layer has "
                f"{self.layer_sizes[0]} units"
            )
        if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError(f"{name} must hold real numbers, got dtype {X.dtype}")
        X = X.astype(self.dtype, copy=False)
        # min/max propagate NaN and see inf without a temporary the size of X.
        if not (np.isfinite(X.min()) and np.isfinite(X.max())):
            bad = int(np.count_nonzero(~np.isfinite(X)))
            raise ValueError(f"{name} contains {bad} NaN or infinite values; clean the inputs")
        return X

    def _check_y(self, y: Any, n: int, name: str = "y", x_name: str = "X") -> np.ndarray:
        y = np.asarray(y)
        n_out = self.layer_sizes[-1]
        if y.shape[:1] != (n,):
            rows = y.shape[0] if y.ndim else 0
            raise ValueError(f"{name} has {rows} rows but {x_name} has {n}")
        if y.ndim == 1:
            if not np.issubdtype(y.dtype, np.integer):
                if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
                    y = y.astype(np.int64)
                else:
                    raise ValueError(f"{name} as 1-D must hold integer class labels, got {y.dtype}")
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= n_out:
                raise ValueError(
                    f"{name} has labels in [{low}, {high}] but must be in [0, {n_out}) for "
                    f"an output layer of {n_out} units"
                )
            return y.astype(np.intp, copy=False)
        if y.ndim == 2:
            if y.shape[1] != n_out:
                raise ValueError(
                    f"{name} has {y.shape[1]} columns but the output layer has {n_out} units"
                )
            y = y.astype(self.dtype, copy=False)
            if not np.all(np.isfinite(y)):
                raise ValueError(f"{name} contains NaN or infinite values")
            return y
        raise ValueError(f"{name} must be labels (n,) or targets (n, {n_out}), got {y.shape}")

    # ------------------------------------------------------------------ forward / backward
    def _forward(self, X: np.ndarray, buffers: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """All activations ``[A^0 = X, A^1, ..., A^N]`` for a checked batch.

        With ``buffers`` (one ``(len(X), n_l)`` array per layer) the activations are written
        into them instead of new arrays.
        """
        outputs = [X]
        a = X
        for layer, (W, b, act) in enumerate(zip(self.weights, self.biases, self._acts)):
            if buffers is None:
                z = a @ W
            else:
                z = np.matmul(a, W, out=buffers[layer])
            z += b
            a = act.forward(z)
            outputs.append(a)
        return outputs

    def _backward(
        self,
        outputs: list[np.ndarray],
        delta: np.ndarray,
        dW: list[np.ndarray],
        db: list[np.ndarray],
        buffers: list[np.ndarray] | None = None,
        ones: np.ndarray | None = None,
    ) -> None:
        """Fill ``dW``/``db`` from the output error ``delta = dC/dZ^N``; weights are untouched.

        ``buffers``, when given, receive the hidden layers' errors (as in :meth:`_forward`);
        ``ones`` is a vector of ``len(delta)`` ones (made here when not given).
        """
        if ones is None:
            ones = np.ones(delta.shape[0], delta.dtype)
        for layer in range(len(self.weights) - 1, -1, -1):
            np.matmul(outputs[layer].T, delta, out=dW[layer])
            # dC/db = 1^T Delta: the column sums, as a product (faster than a reduction here).
            np.matmul(ones, delta, out=db[layer])
            if layer:
                W_T = self.weights[layer].T
                if buffers is None:
                    delta = delta @ W_T
                else:
                    delta = np.matmul(delta, W_T, out=buffers[layer - 1])
                delta = self._acts[layer - 1].backward(outputs[layer], delta)

    def forward(self, X: Any) -> np.ndarray:
        """Output activations, shape ``(n, n_N)``; class probabilities for a softmax output."""
        return self._forward(self._check_X(X))[-1]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels: the arg-max output, or ``output > 0.5`` for a single output unit."""
        return _predicted_classes(self.forward(X))

    def loss(self, X: Any, y: Any) -> float:
        """Mean cost over the examples; ``y`` as int labels ``(n,)`` or targets ``(n, n_N)``."""
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        return self._loss.value(self._forward(X)[-1], y)

    def gradients(self, X: Any, y: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(dW, db)``: the gradient of :meth:`loss` w.r.t. every weight and bias array."""
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        outputs = self._forward(X)
        delta = self._loss.output_delta(outputs[-1], y, self._acts[-1])
        dW = [np.empty_like(W) for W in self.weights]
        db = [np.empty_like(b) for b in self.biases]
        self._backward(outputs, delta, dW, db)
        return dW, db

    # ------------------------------------------------------------------ training
    def fit(
        self,
        X: Any,
        y: Any,
        epochs: int = 1,
        batch_size: int = 32,
        optimizer: Optimizer | None = None,
        validation: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        callbacks: Sequence[Callback] = (),
        *,
        schedule: Schedule | None = None,
        dropout: float | Sequence[float] = 0.0,
        input_dropout: float = 0.0,
        max_norm: float | None = None,
        early_stopping: EarlyStopping | None = None,
        batch_parts: int = 1,
        workers: int = 1,
    ) -> dict[str, Any]:
        """Mini-batch training; returns the per-epoch history.

        Each epoch visits every example once in ``S = ceil(N / batch_size)`` steps, the last batch
        possibly smaller (seed 002, eq. 68), in an order drawn from the network's generator
        (``shuffle=False``: in the given order). History keys: ``epoch``, ``loss`` and
        ``accuracy`` (running means over the epoch's batches, as Keras reports them), ``seconds``
        (training wall time of the epoch) and, with ``validation=(X_val, y_val)``, ``val_loss``
        and ``val_accuracy``. The default optimiser is ``SGD(0.01)``. A non-finite batch loss
        raises :class:`DivergenceError`.

        Options, all off by default (:mod:`mlp.schedules`, :mod:`mlp.regularization`,
        :mod:`mlp.stopping`):

        - ``schedule``: the learning rate of each epoch, ``optimizer.learning_rate`` times
          ``schedule.factor(epoch, epochs)``, for any optimiser; history key ``learning_rate``.
        - ``dropout``: inverted dropout on the hidden layers' outputs, one rate for all or one
          per hidden layer; ``input_dropout`` on the inputs. Masks come from the network's
          generator; only training steps drop units.
        - ``max_norm``: after every step, incoming weight vectors longer than this are scaled
          back to it.
        - ``early_stopping``: an :class:`mlp.EarlyStopping` watching a validation metric (needs
          ``validation``); history keys ``best_epoch``, ``stopped_epoch``, ``restored_best``.

        How a step is computed (:mod:`mlp.parallel`): ``batch_parts`` splits every batch in that
        many fixed blocks of rows, whose gradients are computed separately and added in block
        order (the weights' last bits depend on it); ``workers`` threads share the blocks (any
        count gives the same weights). Each thread's matrix products use the BLAS threads in
        force, so with ``workers > 1`` limit those to one (``threadpoolctl``).
        """
        epochs = rules.positive_int("epochs", epochs)
        batch_size = rules.positive_int("batch_size", batch_size)
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        if validation is not None:
            validation = self._check_validation(validation)
        optimizer = optimizer if optimizer is not None else SGD(0.01)
        rates = regularization.dropout_rates(len(self.layer_sizes) - 2, dropout, input_dropout)
        if max_norm is not None:
            max_norm = rules.positive("max_norm", max_norm)
        if early_stopping is not None and validation is None:
            raise ValueError("early_stopping watches a validation metric: pass validation=")
        batch_parts = rules.positive_int("batch_parts", batch_parts)
        workers = rules.positive_int("workers", workers)
        trainer = _Trainer(
            self,
            X,
            y,
            batch_size,
            optimizer,
            shuffle,
            rates if any(rates) else None,
            max_norm,
            batch_parts,
        )
        callbacks = list(callbacks)
        batch_callbacks = [c for c in callbacks if _overrides(c, "on_batch_end")]
        history: dict[str, Any] = {"epoch": [], "loss": [], "accuracy": [], "seconds": []}
        if validation is not None:
            history["val_loss"], history["val_accuracy"] = [], []
        if schedule is not None:
            history["learning_rate"] = []
        if early_stopping is not None:
            early_stopping.begin()

        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin(self, trainer.info(epochs))
        base_rate = optimizer.learning_rate
        # Overflow is detected through the loss (DivergenceError), not as warnings. Every thread
        # of the runner sets the same error state for its parts.
        with np.errstate(over="ignore", invalid="ignore"), trainer.start(workers):
            try:
                for epoch in range(1, epochs + 1):
                    if schedule is not None:
                        trainer.set_learning_rate(base_rate * schedule.factor(epoch, epochs))
                    for cb in callbacks:
                        cb.on_epoch_begin(epoch)
                    logs = self._train_epoch(trainer, epoch, batch_callbacks, validation)
                    if schedule is not None:
                        logs["learning_rate"] = optimizer.learning_rate
                    for key, value in logs.items():
                        history[key].append(value)
                    for cb in callbacks:
                        cb.on_epoch_end(epoch, logs)
                    if early_stopping is not None and early_stopping.update(
                        epoch, logs, trainer.params
                    ):
                        self.stop_training = True
                    if self.stop_training:
                        break
            finally:
                if schedule is not None:
                    trainer.set_learning_rate(base_rate)
        if early_stopping is not None:
            early_stopping.end(trainer.params, history)
        for cb in callbacks:
            cb.on_train_end(history)
        return history

    def _check_validation(self, validation: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
        X_val = self._check_X(validation[0], "X_val")
        return X_val, self._check_y(validation[1], X_val.shape[0], "y_val", "X_val")

    def _train_epoch(
        self,
        trainer: _Trainer,
        epoch: int,
        batch_callbacks: list[Callback],
        validation: tuple[np.ndarray, np.ndarray] | None,
    ) -> dict[str, float]:
        """Train one epoch; return its row of the history (``seconds``: the training alone)."""
        start = time.perf_counter()
        loss, accuracy = trainer.run_epoch(epoch, batch_callbacks)
        seconds = time.perf_counter() - start
        logs = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "seconds": seconds}
        if validation is not None:
            logs.update(self._validation_logs(*validation))
        return logs

    def _validation_logs(self, X_val: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
        """``val_loss`` and ``val_accuracy`` of the current weights on checked data."""
        out = self._forward(X_val)[-1]
        val_loss = self._loss.value(out, y_val)
        val_accuracy = float(np.mean(_predicted_classes(out) == _true_classes(y_val)))
        return {"val_loss": val_loss, "val_accuracy": val_accuracy}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``W0, b0, W1, b1, ...`` and the config (JSON) to a ``.npz``, atomically."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"W{i}"], arrays[f"b{i}"] = W, b
        meta = {"format_version": _FORMAT_VERSION, **self.config()}
        arrays["config"] = np.array(json.dumps(meta, sort_keys=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a model is an ordinary file
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> MLP:
        """Rebuild a network written by :meth:`save` (read with ``allow_pickle=False``).

        A file that is not such a network (truncated, damaged, another kind of file, missing or
        misshapen arrays, a config this version does not know, non-finite weights) raises
        :class:`ModelFileError`, which names the file and what is wrong with it. A missing file
        raises ``FileNotFoundError``.
        """
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ModelFileError(path, "is a single .npy array, not a saved MLP (.npz)")
            with data:
                return cls._from_arrays(path, data)
        except (ModelFileError, FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else ""
            raise ModelFileError(
                path, f"cannot be read as a saved MLP ({type(exc).__name__}: {reason})"
            ) from exc

    @classmethod
    def _from_arrays(cls, path: str | os.PathLike, data: Any) -> MLP:
        if "config" not in data.files:
            raise ModelFileError(path, "is not a saved MLP: it has no 'config' entry")
        meta = json.loads(str(data["config"]))
        if not isinstance(meta, dict):
            raise ModelFileError(path, f"its config is a {type(meta).__name__}, not a mapping")
        version = meta.pop("format_version", None)
        if version != _FORMAT_VERSION:
            raise ModelFileError(
                path,
                f"has format version {version!r}; this version of mlp reads {_FORMAT_VERSION}",
            )
        known = {"layer_sizes", "activations", "loss", "init", "seed", "dtype"}
        unknown = sorted(set(meta) - known)
        if unknown:
            raise ModelFileError(path, f"its config has keys this version does not know: {unknown}")
        try:
            net = cls(**meta)
        except (ValueError, TypeError) as exc:
            raise ModelFileError(path, f"its config is invalid: {exc}") from exc
        for i in range(len(net.weights)):
            for name, target in ((f"W{i}", net.weights[i]), (f"b{i}", net.biases[i])):
                if name not in data.files:
                    raise ModelFileError(path, f"lacks the array {name!r}")
                array = data[name]
                if array.shape != target.shape:
                    raise ModelFileError(
                        path, f"{name} has shape {array.shape}, the config says {target.shape}"
                    )
                if array.dtype != target.dtype:
                    raise ModelFileError(
                        path, f"{name} holds {array.dtype}, the config says {target.dtype}"
                    )
                if not np.isfinite(array).all():
                    bad = int(np.count_nonzero(~np.isfinite(array)))
                    raise ModelFileError(
                        path, f"{name} holds {bad} non-finite value(s) (NaN or inf)"
                    )
                target[...] = array
        return net


class ModelFileError(ValueError):
    """:meth:`MLP.load` could not rebuild a network from a file. Attributes: ``path`` (the file)
    and ``reason`` (what is wrong); ``str(error)`` reads ``"{path}: {reason}"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable with its attributes
        return (type(self), (self.path, self.reason))


def _dtype_name(dtype: Any) -> Any:
    """NumPy's name for ``dtype`` (``np.float64``, ``"f8"`` and ``"float64"`` are all
    ``"float64"``); ``dtype`` itself when NumPy cannot read it."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return dtype


def _overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback``'s class implements ``hook`` (``fit`` skips the others' per-batch
    calls)."""
    return getattr(type(callback), hook) is not getattr(Callback, hook)


def _predicted_classes(out: np.ndarray) -> np.ndarray:
    """Arg-max of each row; ``out > 0.5`` for a single output unit."""
    if out.shape[1] == 1:
        return (out[:, 0] > 0.5).astype(np.intp)
    return out.argmax(axis=1)


def _true_classes(target: np.ndarray) -> np.ndarray:
    """Labels as given, or the class a 2-D target row stands for."""
    if target.ndim == 1:
        return target
    return _predicted_classes(target)


# ---------------------------------------------------------------------------- training machinery
class _StepBuffers:
    """The arrays a training step writes into, for batches of one size ``m``.

    ``activations``: one ``(m, n_l)`` array per layer (``A^1 .. A^N``); ``errors``: one per hidden
    layer (``Delta^1 .. Delta^{N-1}``; the loss makes the output error, for softmax +
    cross-entropy in place in ``A^N``); ``ones``: ``m`` ones (``dC/db = ones @ Delta``); ``X`` and
    ``T``: where a shuffled batch of inputs and targets is gathered (``None`` without shuffling,
    when batches are slices of the data).
    """

    __slots__ = ("T", "X", "activations", "errors", "ones")

    def __init__(self, X, T, activations, errors, ones):
        self.X, self.T, self.activations, self.errors, self.ones = X, T, activations, errors, ones

    @classmethod
    def allocate(
        cls, m: int, layer_sizes: list[int], dtype: np.dtype, gather_from: tuple | None
    ) -> _StepBuffers:
        """Buffers for batches of ``m`` rows; ``gather_from=(X, targets)`` to shuffle from."""
        X = T = None
        if gather_from is not None:
            X = np.empty((m, gather_from[0].shape[1]), gather_from[0].dtype)
            T = np.empty((m, gather_from[1].shape[1]), gather_from[1].dtype)
        return cls(
            X,
            T,
            [np.empty((m, k), dtype) for k in layer_sizes[1:]],
            [np.empty((m, k), dtype) for k in layer_sizes[1:-1]],
            np.ones(m, dtype),
        )

    def head(self, m: int) -> _StepBuffers:
        """The same memory for a smaller batch of ``m`` rows (views of the first ``m``)."""
        return self.rows(slice(0, m))

    def rows(self, rows: slice) -> _StepBuffers:
        """The same memory for a block of the batch's ``rows`` (views)."""
        return _StepBuffers(
            None if self.X is None else self.X[rows],
            None if self.T is None else self.T[rows],
            [a[rows] for a in self.activations],
            [e[rows] for e in self.errors],
            self.ones[rows],
        )


class _EpochRecord:
    """What an epoch's history row is computed from: each batch's predictions and loss, taken
    from the batch's outputs before its step (the running means Keras reports).

    Subclasses differ in how the loss is kept; :meth:`batch` also raises :class:`DivergenceError`
    as soon as a batch's loss is not finite. With ``batch_parts`` the blocks of a batch are
    recorded separately, possibly at the same time by different threads (each writes only its
    own rows), and :meth:`end_step` completes the batch.
    """

    def __init__(self, n: int, batch_size: int, steps: int):
        self.n, self.batch_size, self.steps = n, batch_size, steps
        self.predicted = np.empty(n, np.intp)
        self.epoch = 0
        self.true_label: np.ndarray | None = None

    def begin(self, epoch: int, true_label: np.ndarray) -> None:
        """Start epoch ``epoch``; ``true_label`` is every example's class in the epoch's order."""
        self.epoch, self.true_label = epoch, true_label

    def batch(self, out: np.ndarray, target: np.ndarray, lo: int, hi: int) -> None:
        """Record the batch (or block of a batch) of rows ``lo:hi`` (in the epoch's order) from
        its outputs."""
        raise NotImplementedError

    def end_step(self) -> None:
        """Every block of the step's batch is recorded."""

    def batch_mean_loss(self, lo: int, hi: int) -> float:
        """The mean loss of the batch just recorded (for ``on_batch_end``)."""
        raise NotImplementedError

    def epoch_loss(self) -> float:
        """The mean loss over the epoch's examples."""
        raise NotImplementedError

    def epoch_accuracy(self) -> float:
        return np.count_nonzero(self.predicted == self.true_label) / self.n

    def _predictions(self, out: np.ndarray, lo: int, hi: int) -> None:
        # As _predicted_classes, written into the epoch's array.
        if out.shape[1] > 1:
            out.argmax(axis=1, out=self.predicted[lo:hi])
        else:
            np.greater(out[:, 0], 0.5, out=self.predicted[lo:hi], casting="unsafe")

    def _diverged(self, lo: int, loss: float) -> DivergenceError:
        return DivergenceError(self.epoch, lo // self.batch_size + 1, self.steps, loss)


class _LossRecord(_EpochRecord):
    """Any loss and targets: every batch's summed loss from :meth:`Loss.sum`."""

    def __init__(self, n: int, batch_size: int, steps: int, loss: _losses.Loss):
        super().__init__(n, batch_size, steps)
        self.loss = loss
        self.loss_sum = self.last_loss = 0.0
        self.block_loss: dict[int, float] = {}  # the step's blocks' summed losses, by first row

    def begin(self, epoch: int, true_label: np.ndarray) -> None:
        super().begin(epoch, true_label)
        self.loss_sum = 0.0

    def batch(self, out: np.ndarray, target: np.ndarray, lo: int, hi: int) -> None:
        batch_loss = self.loss.sum(out, target)
        if not math.isfinite(batch_loss):
            raise self._diverged(lo, batch_loss)
        self.block_loss[lo] = batch_loss
        self._predictions(out, lo, hi)

    def end_step(self) -> None:
        blocks = self.block_loss
        if len(blocks) == 1:
            (self.last_loss,) = blocks.values()
        else:  # added in row order, whichever thread recorded them
            self.last_loss = sum(blocks[lo] for lo in sorted(blocks))
        self.loss_sum += self.last_loss
        blocks.clear()

    def batch_mean_loss(self, lo: int, hi: int) -> float:
        return self.last_loss / (min(hi, self.n) - lo)

    def epoch_loss(self) -> float:
        return self.loss_sum / self.n


class _FusedCrossEntropyRecord(_EpochRecord):
    """Softmax + cross-entropy with integer labels: no loss is computed per step.

    A step gathers the probability each example gives its true class into ``p_true`` (one
    ``take`` on the outputs of the batch, or of each of its ``batch_parts`` blocks); the epoch's
    loss is computed from all of them at once, with the probabilities clipped by the dtype's eps
    as in :meth:`CrossEntropy.sum`.
    """

    def __init__(
        self, n: int, batch_size: int, steps: int, n_out: int, dtype: np.dtype, parts: int = 1
    ):
        super().__init__(n, batch_size, steps)
        self.p_true = np.empty(n, dtype)
        self.eps = np.finfo(dtype).eps
        # Where each example's row starts in its block's (rows, n_out) outputs, flattened.
        self.row_start = _row_in_block(n, batch_size, parts) * n_out
        self.true_flat = np.empty_like(self.row_start)

    def begin(self, epoch: int, true_label: np.ndarray) -> None:
        super().begin(epoch, true_label)
        # Flat index of each example's true class inside its batch's output block.
        np.add(self.row_start, true_label, out=self.true_flat)

    def batch(self, out: np.ndarray, target: np.ndarray, lo: int, hi: int) -> None:
        batch_p = np.take(out, self.true_flat[lo:hi], out=self.p_true[lo:hi], mode="clip")
        if not math.isfinite(np.add.reduce(batch_p)):  # finite exactly when every row of out is
            raise self._diverged(lo, math.nan)
        self._predictions(out, lo, hi)

    def batch_mean_loss(self, lo: int, hi: int) -> float:
        batch_p = self.p_true[lo:hi]
        batch_loss = -np.log(np.clip(batch_p, self.eps, 1 - self.eps)).sum()
        return float(batch_loss) / batch_p.shape[0]

    def epoch_loss(self) -> float:
        clipped = np.clip(self.p_true, self.eps, 1 - self.eps)
        return float(-np.log(clipped, dtype=np.float64).sum()) / self.n


def _row_in_block(n: int, batch_size: int, parts: int) -> np.ndarray:
    """Each example's row in its block of :func:`part_bounds` (``parts`` blocks per batch; the
    last batch may be smaller and has blocks of its own)."""
    row = np.arange(n) % batch_size
    last_lo = (math.ceil(n / batch_size) - 1) * batch_size
    for batches, m in ((slice(0, last_lo), batch_size), (slice(last_lo, n), n - last_lo)):
        edges = np.array(part_bounds(m, parts))
        rows = row[batches]
        rows -= edges[np.searchsorted(edges, rows, side="right") - 1]
    return row


class _Trainer:
    """What one call of :meth:`MLP.fit` sets up once, and the loop of one epoch.

    Set up once: the targets in dense form (one-hot rows for integer labels: the output error
    needs them) and the class of every example; the gradient arrays and the buffers every step
    writes into (:class:`_StepBuffers`, and views of them for the last, possibly partial, batch);
    the optimiser's update; and the epoch's record (:class:`_EpochRecord`).

    With ``parts > 1`` a step is computed in blocks of the batch's rows (:mod:`mlp.parallel`):
    each block has views of the step buffers and gradient arrays of its own (the first block
    those of the step), and the blocks' gradients are added in block order.
    """

    def __init__(
        self,
        net: MLP,
        X: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        optimizer: Optimizer,
        shuffle: bool,
        dropout: list[float] | None = None,
        max_norm: float | None = None,
        parts: int = 1,
    ):
        n, n_out = X.shape[0], net.layer_sizes[-1]
        self.net, self.X, self.n, self.shuffle = net, X, n, shuffle
        self.batch_size = batch_size = min(batch_size, n)
        self.steps = steps = math.ceil(n / batch_size)
        self.loss, self.output_activation = net._loss, net._acts[-1]
        self.params = [*net.weights, *net.biases]
        self.dW = [np.empty_like(W) for W in net.weights]
        self.db = [np.empty_like(b) for b in net.biases]
        self.grads = [*self.dW, *self.db]
        self.optimizer = optimizer
        self._choose_update()

        labels = y.ndim == 1
        self.targets = _losses.one_hot(y, n_out, net.dtype) if labels else y
        self.classes = y if labels else _true_classes(self.targets)
        # The class of every example in the epoch's order (shuffled into this array each epoch).
        self.true_label = np.empty_like(self.classes) if shuffle else self.classes

        gather_from = (X, self.targets) if shuffle else None
        self.buffers = _StepBuffers.allocate(batch_size, net.layer_sizes, net.dtype, gather_from)
        self.last_buffers = self.buffers.head(n - (steps - 1) * batch_size)
        self.parts = parts
        extra = [
            ([np.empty_like(W) for W in net.weights], [np.empty_like(b) for b in net.biases])
            for _ in range(1, min(parts, batch_size))
        ]
        self.full_blocks = self._blocks(self.buffers, extra)
        self.last_blocks = self._blocks(self.last_buffers, extra)
        self.runner: PartRunner | None = None

        if labels and isinstance(self.loss, _losses.CrossEntropy):
            self.record: _EpochRecord = _FusedCrossEntropyRecord(
                n, batch_size, steps, n_out, net.dtype, parts
            )
        else:
            self.record = _LossRecord(n, batch_size, steps, self.loss)

        # Regularisation (mlp.regularization), off unless asked for.
        self.dropout = None
        if dropout is not None:
            last_size = n - (steps - 1) * batch_size
            self.dropout = regularization.DropoutStep(net, dropout, batch_size, last_size)
        self.max_norm = max_norm

    def _blocks(self, buffers: _StepBuffers, extra: list) -> list[tuple]:
        """``(rows, buffers, dW, db)`` of each block of a batch that uses ``buffers``; ``rows``
        is ``None`` for a batch in one block."""
        m = buffers.ones.shape[0]
        edges = part_bounds(m, self.parts)
        if len(edges) == 2:
            return [(None, buffers, self.dW, self.db)]
        grads = [(self.dW, self.db), *extra]
        return [
            (rows, buffers.rows(rows), *grads[i])
            for i, rows in enumerate(slice(a, b) for a, b in itertools.pairwise(edges))
        ]

    @contextlib.contextmanager
    def start(self, workers: int) -> Iterator[None]:
        """The threads that share the blocks of a step, for the duration of the block."""
        workers = min(workers, len(self.full_blocks))
        if workers == 1:
            yield
            return
        with PartRunner(workers) as self.runner:
            try:
                yield
            finally:
                self.runner = None

    def _choose_update(self) -> None:
        # Plain SGD folds its learning rate into the output error: backpropagation then yields
        # the updates themselves, and a step is one subtraction per parameter.
        scale = self.optimizer._fold_scale()
        if scale is None:
            self.error_scale, self.update = 1.0, self.optimizer.step
        else:
            self.error_scale, self.update = scale, self.optimizer._step_scaled

    def set_learning_rate(self, learning_rate: float) -> None:
        """The optimiser's rate from now on (a schedule's epoch rate)."""
        self.optimizer.learning_rate = learning_rate
        self._choose_update()

    def info(self, epochs: int) -> dict[str, int]:
        """What :meth:`Callback.on_train_begin` receives."""
        return {
            "epochs": epochs,
            "steps_per_epoch": self.steps,
            "n_samples": self.n,
            "batch_size": self.batch_size,
        }

    def run_epoch(self, epoch: int, batch_callbacks: list[Callback]) -> tuple[float, float]:
        """Visit every example once, one step per batch; return the epoch's mean loss and
        accuracy (each batch measured before its step)."""
        X, targets, n, size = self.X, self.targets, self.n, self.batch_size
        full_buffers, last_buffers, record = self.buffers, self.last_buffers, self.record
        update, params, grads, part = self.update, self.params, self.grads, self._part
        dropout, max_norm, weights = self.dropout, self.max_norm, self.net.weights
        order = self._epoch_order()
        record.begin(epoch, self.true_label)
        for step in range(self.steps):
            lo = step * size
            hi = lo + size
            buffers, blocks = (
                (full_buffers, self.full_blocks) if hi <= n else (last_buffers, self.last_blocks)
            )
            if order is None:
                Xb, Tb = X[lo:hi], targets[lo:hi]
            else:
                # mode="clip" skips the bounds-checked copy NumPy makes for out=; `order` is a
                # permutation of range(n), so every index is valid.
                idx = order[lo:hi]
                Xb = X.take(idx, axis=0, out=buffers.X, mode="clip")
                Tb = targets.take(idx, axis=0, out=buffers.T, mode="clip")
            if dropout is not None:
                dropout.draw(Xb.shape[0])
            if len(blocks) == 1:
                part(Xb, Tb, lo, blocks[0])
            else:
                self._parted_step(Xb, Tb, lo, blocks)
            record.end_step()
            update(params, grads)
            if max_norm is not None:
                regularization.max_norm(weights, max_norm)
            if batch_callbacks:
                mean_loss = record.batch_mean_loss(lo, hi)
                for cb in batch_callbacks:
                    cb.on_batch_end(epoch, step + 1, mean_loss)
        self._check_blown_up(epoch, buffers.activations)
        return record.epoch_loss(), record.epoch_accuracy()

    def _part(self, Xb: np.ndarray, Tb: np.ndarray, lo: int, block: tuple) -> None:
        """Forward pass, record and backward pass of one block of the batch ``Xb, Tb`` (whose
        first row is row ``lo`` of the epoch's order); the block's gradients go to its arrays."""
        rows, buffers, dW, db = block
        m = Xb.shape[0]
        if rows is not None:
            Xb, Tb = Xb[rows], Tb[rows]
            lo += rows.start
        if self.dropout is None:
            outputs = self.net._forward(Xb, buffers.activations)
        else:
            outputs, inputs = self.dropout.forward(Xb, buffers.activations, rows or slice(None))
        self.record.batch(outputs[-1], Tb, lo, lo + Xb.shape[0])
        delta = self.loss.output_delta(
            outputs[-1], Tb, self.output_activation, self.error_scale, batch_rows=m
        )
        if self.dropout is None:
            self.net._backward(outputs, delta, dW, db, buffers.errors, buffers.ones)
        else:
            self.dropout.backward(
                outputs, inputs, rows or slice(None), delta, dW, db, buffers.errors, buffers.ones
            )

    def _parted_step(self, Xb: np.ndarray, Tb: np.ndarray, lo: int, blocks: list) -> None:
        """The blocks of one batch, shared by the runner's threads (all in this thread without
        one); then every block's gradients added to the first's, in block order."""
        if self.runner is None:
            for block in blocks:
                self._part(Xb, Tb, lo, block)
        else:
            self.runner.run(lambda i: self._part(Xb, Tb, lo, blocks[i]), len(blocks))
        for _, _, dW, db in blocks[1:]:
            for total, block_grad in zip(self.grads, (*dW, *db)):
                total += block_grad

    def _check_blown_up(self, epoch: int, activations: Sequence[np.ndarray]) -> None:
        """Raise :class:`DivergenceError` when, after ``epoch``, a weight or bias, or an
        activation of the epoch's last batch, is not finite or larger than
        :func:`overflow_limit`: a network that blew up while its clipped loss stayed finite."""
        limit = overflow_limit(self.net.dtype)
        for what, arrays in (
            ("the weights", self.params),
            ("the activations", activations),
        ):
            largest = _largest_magnitude(arrays)
            if not largest <= limit:  # NaN included
                size = "non-finite" if not math.isfinite(largest) else f"{largest:.3g}"
                raise DivergenceError(
                    epoch,
                    self.steps,
                    self.steps,
                    self.record.epoch_loss(),
                    f"{what} reached {size} (beyond {limit:.3g}, the limit for {self.net.dtype})",
                )

    def _epoch_order(self) -> np.ndarray | None:
        """This epoch's permutation of the examples (``None``: the given order), drawn from the
        network's generator; ``true_label`` follows it."""
        if not self.shuffle:
            return None
        order = self.net.rng.permutation(self.n)
        np.take(self.classes, order, out=self.true_label, mode="clip")
        return order
