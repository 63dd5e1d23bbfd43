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

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlp import activations as _activations
from mlp import initializers as _initializers
from mlp import losses as _losses
from mlp import rules
from mlp.callbacks import Callback
from mlp.optimizers import SGD, Optimizer

#: The floating-point types a network computes in (``MLP(dtype=...)``).
DTYPES = ("float32", "float64")
_FORMAT_VERSION = 1


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss. ``epoch`` and ``step`` are 1-based."""

    def __init__(self, epoch: int, step: int, steps_per_epoch: int, loss: float):
        self.epoch, self.step, self.steps_per_epoch, self.loss = epoch, step, steps_per_epoch, loss
        FloatingPointError.__init__(
            self,
            f"training diverged: the loss became {loss} at epoch {epoch}, step {step} of "
            f"{steps_per_epoch}; the weights are no longer usable. Try a smaller learning rate, "
            "another initialisation, or inputs scaled to a small range.",
        )

    def __reduce__(self):  # picklable, so it can cross process boundaries (parallel sweeps)
        return (type(self), (self.epoch, self.step, self.steps_per_epoch, self.loss))


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

    An unknown name or dtype raises :class:`mlp.ParameterError` naming the argument; other
    inconsistencies (sizes, an activation or loss in the wrong place) a ``ValueError``.
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
            raise ValueError(
                f"layer_sizes needs at least an input and an output size, got {sizes!r}"
            )
        for n in sizes:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"every layer size must be an integer >= 1, got {sizes!r}")
        self.layer_sizes = [int(n) for n in sizes]
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
    ) -> dict[str, list[float]]:
        """Mini-batch training; returns the per-epoch history.

        Each epoch visits every example once in ``S = ceil(N / batch_size)`` steps, the last batch
        possibly smaller (seed 002, eq. 68), in an order drawn from the network's generator
        (``shuffle=False``: in the given order). History keys: ``epoch``, ``loss`` and
        ``accuracy`` (running means over the epoch's batches, as Keras reports them), ``seconds``
        (training wall time of the epoch) and, with ``validation=(X_val, y_val)``, ``val_loss``
        and ``val_accuracy``. A non-finite batch loss raises :class:`DivergenceError`.
        """
        epochs = rules.positive_int("epochs", epochs)
        batch_size = rules.positive_int("batch_size", batch_size)
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        if validation is not None:
            X_val = self._check_X(validation[0], "X_val")
            y_val = self._check_y(validation[1], X_val.shape[0], "y_val", "X_val")
        optimizer = optimizer if optimizer is not None else SGD(0.01)

        n, n_out = X.shape[0], self.layer_sizes[-1]
        batch_size = min(batch_size, n)
        steps = math.ceil(n / batch_size)
        loss, out_act = self._loss, self._acts[-1]
        params = [*self.weights, *self.biases]
        # Plain SGD folds its learning rate into the output error: backpropagation then yields
        # the updates themselves, and a step is one subtraction per parameter.
        error_scale = optimizer._fold_scale()
        if error_scale is None:
            error_scale, step_parameters = 1.0, optimizer.step
        else:
            step_parameters = optimizer._step_scaled
        dW = [np.empty_like(W) for W in self.weights]
        db = [np.empty_like(b) for b in self.biases]
        grads = [*dW, *db]
        # Buffers reused by every step: activations and errors of each layer.
        act_buffers = [np.empty((batch_size, k), self.dtype) for k in self.layer_sizes[1:]]
        err_buffers = [np.empty((batch_size, k), self.dtype) for k in self.layer_sizes[1:-1]]
        last = n - (steps - 1) * batch_size  # size of the last, possibly partial, batch
        last_act_buffers = [b[:last] for b in act_buffers]
        last_err_buffers = [b[:last] for b in err_buffers]
        ones = np.ones(batch_size, self.dtype)

        # Integer labels: the loss needs dense one-hot targets; the bookkeeping uses the labels.
        # Softmax + cross-entropy then needs no per-step loss computation: the probability of each
        # example's true class is gathered into `p_true`, and the epoch's loss and accuracy are
        # computed from it and from the recorded predictions once per epoch.
        labels = y.ndim == 1
        targets = _losses.one_hot(y, n_out, self.dtype) if labels else y
        fused_ce = labels and isinstance(loss, _losses.CrossEntropy)
        predicted = np.empty(n, np.intp)
        if fused_ce:
            p_true = np.empty(n, self.dtype)
            eps = np.finfo(self.dtype).eps
        # The class of every example, in the epoch's order (for the running accuracy).
        classes = y if labels else _true_classes(targets)
        true_label = classes
        if shuffle:
            X_batch = np.empty((batch_size, X.shape[1]), X.dtype)
            T_batch = np.empty((batch_size, targets.shape[1]), targets.dtype)
            true_label = np.empty_like(classes)

        callbacks = list(callbacks)
        batch_callbacks = [
            c for c in callbacks if type(c).on_batch_end is not Callback.on_batch_end
        ]
        history: dict[str, list[float]] = {"epoch": [], "loss": [], "accuracy": [], "seconds": []}
        if validation is not None:
            history["val_loss"], history["val_accuracy"] = [], []
        info = {
            "epochs": epochs,
            "steps_per_epoch": steps,
            "n_samples": n,
            "batch_size": batch_size,
        }
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin(self, info)

        # Overflow is detected through the loss (DivergenceError), not as warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(1, epochs + 1):
                for cb in callbacks:
                    cb.on_epoch_begin(epoch)
                start = time.perf_counter()
                if shuffle:
                    order = self.rng.permutation(n)
                    # mode="clip" skips the bounds-checked copy NumPy makes for out=; `order` is a
                    # permutation of range(n), so every index is valid.
                    np.take(classes, order, out=true_label, mode="clip")
                if fused_ce:
                    # Flat index of each example's true class inside its batch's output block.
                    true_flat = (np.arange(n) % batch_size) * n_out + true_label
                loss_sum = 0.0
                for step in range(steps):
                    lo = step * batch_size
                    hi = lo + batch_size
                    if shuffle:
                        idx = order[lo:hi]
                        m = idx.shape[0]
                        Xb = X.take(idx, axis=0, out=X_batch[:m], mode="clip")
                        Tb = targets.take(idx, axis=0, out=T_batch[:m], mode="clip")
                    else:
                        Xb, Tb = X[lo:hi], targets[lo:hi]
                    full = hi <= n
                    outputs = self._forward(Xb, act_buffers if full else last_act_buffers)
                    out = outputs[-1]
                    if fused_ce:
                        batch_p = np.take(out, true_flat[lo:hi], out=p_true[lo:hi], mode="clip")
                        batch_loss = np.add.reduce(
                            batch_p
                        )  # finite exactly when every row of out is
                        if not math.isfinite(batch_loss):
                            raise DivergenceError(epoch, step + 1, steps, float("nan"))
                    else:
                        batch_loss = loss.sum(out, Tb)
                        if not math.isfinite(batch_loss):
                            raise DivergenceError(epoch, step + 1, steps, batch_loss)
                        loss_sum += batch_loss
                    if n_out > 1:
                        out.argmax(axis=1, out=predicted[lo:hi])
                    else:
                        np.greater(out[:, 0], 0.5, out=predicted[lo:hi], casting="unsafe")
                    delta = loss.output_delta(out, Tb, out_act, error_scale)
                    if full:
                        self._backward(outputs, delta, dW, db, err_buffers, ones)
                    else:
                        self._backward(outputs, delta, dW, db, last_err_buffers, ones[:last])
                    step_parameters(params, grads)
                    if batch_callbacks:
                        if fused_ce:
                            batch_loss = -np.log(np.clip(batch_p, eps, 1 - eps)).sum()
                        mean_loss = float(batch_loss) / Xb.shape[0]
                        for cb in batch_callbacks:
                            cb.on_batch_end(epoch, step + 1, mean_loss)
                if fused_ce:
                    loss_sum = float(-np.log(np.clip(p_true, eps, 1 - eps), dtype=np.float64).sum())
                accuracy = np.count_nonzero(predicted == _true_classes(true_label)) / n
                seconds = time.perf_counter() - start
                logs = {
                    "epoch": epoch,
                    "loss": loss_sum / n,
                    "accuracy": accuracy,
                    "seconds": seconds,
                }
                if validation is not None:
                    val_out = self._forward(X_val)[-1]
                    logs["val_loss"] = loss.value(val_out, y_val)
                    val_pred = _predicted_classes(val_out)
                    logs["val_accuracy"] = float(np.mean(val_pred == _true_classes(y_val)))
                for key, value in logs.items():
                    history[key].append(value)
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        for cb in callbacks:
            cb.on_train_end(history)
        return history

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
        """Rebuild a network written by :meth:`save` (read with ``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as data:
            if "config" not in data.files:
                raise ValueError(f"{path} is not a saved MLP: it has no 'config' entry")
            meta = json.loads(str(data["config"]))
            version = meta.pop("format_version", None)
            if version != _FORMAT_VERSION:
                raise ValueError(
                    f"{path} has format version {version!r}; this version of mlp reads "
                    f"{_FORMAT_VERSION}"
                )
            known = {"layer_sizes", "activations", "loss", "init", "seed", "dtype"}
            unknown = sorted(set(meta) - known)
            if unknown:
                raise ValueError(
                    f"{path}: its config has keys this version does not know: {unknown}"
                )
            net = cls(**meta)
            for i in range(len(net.weights)):
                for name, target in ((f"W{i}", net.weights[i]), (f"b{i}", net.biases[i])):
                    if name not in data.files:
                        raise ValueError(f"{path} lacks the array {name!r}")
                    array = data[name]
                    if array.shape != target.shape:
                        raise ValueError(
                            f"{path}: {name} has shape {array.shape}, the config says "
                            f"{target.shape}"
                        )
                    target[...] = array
        return net


def _dtype_name(dtype: Any) -> Any:
    """NumPy's name for ``dtype`` (``np.float64``, ``"f8"`` and ``"float64"`` are all
    ``"float64"``); ``dtype`` itself when NumPy cannot read it."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return dtype


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
