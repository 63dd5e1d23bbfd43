"""The configured network in TensorFlow/Keras, started from the NumPy model's initial weights.

Everything here is built from the same :class:`pipeline.config.Config` as the NumPy MLP, so one
configuration means one network in both libraries (there is no second copy of a hyper-parameter):

============================  ==========================================================
config                        Keras
============================  ==========================================================
``model.hidden_sizes``        one ``Dense`` layer per size, then ``Dense(n_classes)``
``model.hidden_activation``   ``activation=`` of the hidden layers (tanh, sigmoid, relu,
                              linear: the same functions under the same names)
``model.output_activation``   ``activation=`` of the output layer
``model.loss``                ``cross_entropy``: ``SparseCategoricalCrossentropy`` (mean over
                              the batch); ``sse``: :class:`SumSquaredError`,
                              ``1/2 sum_i (y_i - a_i)^2`` per example, mean over the batch
``model.init``                not used: the kernels and biases are *copied* from an
                              :class:`mlp.MLP` built by :func:`pipeline.training.build.build_model`
``optimizer`` ``sgd`` /       ``keras.optimizers.SGD(learning_rate, momentum, nesterov)``:
``momentum``                  the same update as :class:`mlp.SGD` (Sutskever's form)
``optimizer`` ``adam``        ``keras.optimizers.Adam(learning_rate, beta1, beta2, epsilon)``;
                              Keras adds epsilon to ``sqrt(v)`` *before* the bias correction
                              (the paper's "epsilon hat"), i.e. it divides by
                              ``sqrt(v_hat) + epsilon / sqrt(1 - beta2^t)`` where
                              :class:`mlp.Adam` divides by ``sqrt(v_hat) + epsilon``: the
                              same up to the size of epsilon.
``optimizer.weight_decay``    ``kernel_regularizer=L2(weight_decay / 2)``: its gradient is
                              ``weight_decay * W`` on the kernels, none on the biases, as in
                              :mod:`mlp.optimizers`. Keras adds the penalty to the reported
                              training loss; the NumPy MLP reports the loss without it.
                              (Keras casts the L2 factor through float32: a relative 1e-8
                              in float64 runs.)
``train.dtype``               ``keras.config.floatx`` while the model is built and trained
                              (layers, loss, metrics and the optimiser's learning rate all in
                              float32 or all in float64)
``train.batch_size``,         :func:`batch_orders`: with ``baseline.same_batches`` the very
``train.shuffle``, ``seed``   batches :meth:`mlp.MLP.fit` draws, in the same order
``train.schedule``            ``keras.callbacks.LearningRateScheduler`` with the factor of
                              the same :mod:`mlp.schedules` object: the same rate per epoch
``train.max_norm``            ``kernel_constraint=MaxNorm(max_norm, axis=0)`` (the incoming
                              weight vectors, after every step); Keras divides by
                              ``norm + 1e-7``, so its columns also shrink by a relative
                              1e-7 per step where the NumPy MLP leaves them alone
``model.dropout``,            refused (:func:`check_supported`): Keras's ``Dropout`` draws
``model.input_dropout``       its own masks, so the two runs would no longer be the same
                              computation
``train.early_stopping``      refused: the baseline trains every configured epoch, so its
                              time and metrics compare with a run of the same length
============================  ==========================================================

Import this module before TensorFlow is imported anywhere: it sets ``TF_CPP_MIN_LOG_LEVEL=2``
first (TensorFlow's C++ info and warning logs off; TensorFlow 2.21 still prints its one-line
oneDNN notice, logged before that setting is read). :func:`import_tensorflow` hides the GPUs for
``baseline.device: cpu``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from mlp import MLP, Callback
from pipeline.config import Config
from pipeline.data.dataset import Dataset
from pipeline.errors import PipelineError, UsageError
from pipeline.machine import cpu_description
from pipeline.names import N_CLASSES, TENSORFLOW_THREADS_TAG
from pipeline.training.build import build_model, build_schedule
from pipeline.training.frameworks import History, training_plan

log = logging.getLogger(__name__)

#: How Keras compiles the training step: ``"auto"``, Keras's own default, is a TensorFlow graph
#: (``tf.function``), with XLA only where TensorFlow sees a GPU (on 2 CPU cores XLA made the
#: reference configuration 2-3 times slower).
JIT_COMPILE: bool | str = "auto"
#: Training steps per call into the compiled graph (Keras's ``steps_per_execution``): the steps
#: are the same, in the same order; only the Python round trips between them are fewer.
STEPS_PER_EXECUTION = 32
#: Examples per forward pass when validating and predicting (not a training parameter).
EVAL_BATCH_SIZE = 2048


class BaselineError(PipelineError):
    """The TensorFlow baseline failed (diverged, took other steps than configured, ...)."""


class BaselineUnavailable(BaselineError, UsageError):
    """The TensorFlow baseline cannot run as configured here (no GPU, another Keras backend)."""


# ---------------------------------------------------------------------------- TensorFlow
def import_tensorflow(device: str = "cpu"):
    """Import TensorFlow and Keras for ``device`` (``cpu`` or ``gpu``); returns ``(tf, keras)``.

    ``cpu`` hides every GPU from TensorFlow (when TensorFlow has not placed anything yet;
    otherwise it checks that none is in use). ``gpu`` needs a GPU TensorFlow can see.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        if gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError as exc:  # TensorFlow already initialised its devices
                if tf.config.get_visible_devices("GPU"):
                    raise BaselineUnavailable(
                        "baseline.device = 'cpu' but TensorFlow already uses a GPU in this "
                        f"process ({exc}); run the baseline in a fresh process"
                    ) from None
    elif device == "gpu":
        if not gpus:
            raise BaselineUnavailable(
                "baseline.device = 'gpu' but TensorFlow sees no GPU (tensorflow-cpu, or no "
                "CUDA device); set baseline.device=cpu"
            )
    else:
        raise BaselineUnavailable(f"baseline.device must be 'cpu' or 'gpu', got {device!r}")
    if keras.backend.backend() != "tensorflow":
        raise BaselineUnavailable(
            f"Keras uses the {keras.backend.backend()!r} backend; the baseline needs "
            "TensorFlow: unset KERAS_BACKEND or set it to 'tensorflow'"
        )
    return tf, keras


def set_tensorflow_threads(tf, cfg: Config) -> int | None:
    """Give TensorFlow's CPU thread pools (intra- and inter-op) the count of threads the NumPy
    MLP computes with for ``cfg`` (:mod:`pipeline.threads`: its workers times the BLAS threads of
    each), unless ``train.blas_threads`` is null (then TensorFlow keeps its default).
    TensorFlow takes the count only before its first operation: in a process where it already
    ran, its pools stay as they are (a warning says so). Returns the intra-op threads TensorFlow
    uses (``None``: its default, every core)."""
    wanted = None if cfg.train.blas_threads is None else training_plan(cfg).threads
    if wanted is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(wanted)
            tf.config.threading.set_inter_op_parallelism_threads(wanted)
        except RuntimeError:  # TensorFlow is initialised in this process
            if tf.config.threading.get_intra_op_parallelism_threads() != wanted:
                log.warning(
                    "TensorFlow already runs in this process: it keeps its thread pools "
                    "instead of the %d thread(s) asked for",
                    wanted,
                )
    return tf.config.threading.get_intra_op_parallelism_threads() or None


def processing_unit(device: str = "cpu") -> str:
    """What trained: ``"CPU, 2 cores"`` (the cores this process may use) or the GPU's name."""
    if device == "gpu":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [tf.config.experimental.get_device_details(g).get("device_name") for g in gpus]
        names = [n for n in names if n]
        return "GPU" + (f", {names[0]}" if names else "")
    return cpu_description()


@contextlib.contextmanager
def floatx(dtype: str) -> Iterator[None]:
    """Keras's default float type set to ``dtype`` for the block, then restored."""
    import keras

    previous = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


# ---------------------------------------------------------------------------- what maps
def check_supported(cfg: Config) -> None:
    """Refuse, naming the keys, a configuration the baseline cannot train as the same
    computation as the NumPy MLP (:class:`BaselineUnavailable`, before any run starts)."""
    refused = []
    if cfg.model.dropout or cfg.model.input_dropout:
        refused.append(
            f"model.dropout = {cfg.model.dropout}, model.input_dropout = "
            f"{cfg.model.input_dropout} (Keras would draw other dropout masks)"
        )
    if cfg.train.early_stopping.enabled:
        refused.append("train.early_stopping.enabled = true (the baseline trains every epoch)")
    if refused:
        raise BaselineUnavailable(
            "the TensorFlow baseline trains the same computation as the NumPy MLP and cannot "
            "with " + "; ".join(refused) + ". Run it with those off (e.g. -S model.dropout=0 "
            "-S model.input_dropout=0 -S train.early_stopping.enabled=false)"
        )


# ---------------------------------------------------------------------------- the model
@functools.cache
def _sum_squared_error():
    """The Keras loss class for ``sse`` (defined, and registered for loading, on first use)."""
    import keras

    @keras.saving.register_keras_serializable(package="mlp")
    class SumSquaredError(keras.losses.Loss):
        """``1/2 sum_i (y_i - a_i)^2`` per example (seed 002, eq. 71); Keras averages it over
        the batch. Integer labels are taken as one-hot targets, as :class:`mlp.MLP` does."""

        def __init__(self, n_classes: int = N_CLASSES, **kwargs: Any):
            kwargs.setdefault("name", "sse")
            super().__init__(**kwargs)
            self.n_classes = n_classes

        def call(self, y_true, y_pred):
            ops = keras.ops
            if len(y_true.shape) < len(y_pred.shape) or y_true.shape[-1] != y_pred.shape[-1]:
                labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
                y_true = ops.one_hot(labels, self.n_classes, dtype=y_pred.dtype)
            diff = ops.subtract(y_pred, ops.cast(y_true, y_pred.dtype))
            return 0.5 * ops.sum(ops.square(diff), axis=-1)

        def get_config(self) -> dict:
            return {**super().get_config(), "n_classes": self.n_classes}

    return SumSquaredError


def keras_loss(cfg: Config, n_classes: int = N_CLASSES):
    """The Keras loss for ``cfg.model.loss`` (integer labels as targets), in ``train.dtype``."""
    import keras

    name = cfg.model.loss
    if name == "cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(dtype=cfg.train.dtype)
    if name == "sse":
        return _sum_squared_error()(n_classes, dtype=cfg.train.dtype)
    raise BaselineError(f"model.loss = {name!r} has no Keras counterpart here")


def keras_optimizer(cfg: Config):
    """The Keras optimiser for ``cfg.optimizer`` (see the module's table)."""
    import keras

    o = cfg.optimizer
    if o.name in ("sgd", "momentum"):
        return keras.optimizers.SGD(
            learning_rate=o.learning_rate, momentum=o.momentum, nesterov=o.nesterov
        )
    if o.name == "adam":
        return keras.optimizers.Adam(
            learning_rate=o.learning_rate, beta_1=o.beta1, beta_2=o.beta2, epsilon=o.epsilon
        )
    raise BaselineError(f"optimizer.name = {o.name!r} has no Keras counterpart here")


def build_keras_model(cfg: Config, net: MLP, *, compile: bool = True):
    """The network of ``cfg`` in Keras, holding copies of ``net``'s weights and biases.

    ``net`` must be the model of ``cfg`` (:func:`pipeline.training.build.build_model`); its initial
    weights become the Dense kernels (both are ``(fan_in, fan_out)``) and biases. Compiled with
    the configured loss and optimiser, a top-1 ``accuracy`` metric, Keras's default
    ``jit_compile`` and :data:`STEPS_PER_EXECUTION`. Call it inside :func:`floatx`
    (``cfg.train.dtype``) so that the optimiser and the loss share the layers' dtype.
    """
    import keras

    m = cfg.model
    sizes = [*m.hidden_sizes, net.layer_sizes[-1]]
    activations = [m.hidden_activation] * len(m.hidden_sizes) + [m.output_activation]
    if net.layer_sizes[1:] != sizes or net.activations != activations:
        raise ValueError(
            f"the NumPy model {net!r} is not the network of this config "
            f"({sizes}, {activations}): build it with pipeline.training.build.build_model(cfg)"
        )
    if net.dtype.name != cfg.train.dtype:
        raise ValueError(f"the NumPy model is {net.dtype.name}, train.dtype is {cfg.train.dtype}")
    dtype = cfg.train.dtype
    decay = cfg.optimizer.weight_decay
    regularizer = keras.regularizers.L2(decay / 2) if decay else None
    max_norm = cfg.train.max_norm
    constraint = keras.constraints.MaxNorm(max_norm, axis=0) if max_norm is not None else None
    inputs = keras.Input(shape=(net.layer_sizes[0],), dtype=dtype, name="pixels")
    x = inputs
    for layer, (units, activation) in enumerate(zip(sizes, activations, strict=True)):
        x = keras.layers.Dense(
            units,
            activation=activation,
            kernel_regularizer=regularizer,
            kernel_constraint=constraint,
            dtype=dtype,
            name=f"dense_{layer}",
        )(x)
    sizes_name = "-".join(map(str, net.layer_sizes))
    model = keras.Model(inputs, x, name=f"mlp_{sizes_name}")
    for layer, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        model.get_layer(f"dense_{layer}").set_weights([W, b])
    if compile:
        model.compile(
            optimizer=keras_optimizer(cfg),
            loss=keras_loss(cfg, net.layer_sizes[-1]),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy", dtype=dtype)],
            jit_compile=JIT_COMPILE,
            steps_per_execution=STEPS_PER_EXECUTION,
        )
    return model


def keras_weights(model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(weights, biases)`` of a model from :func:`build_keras_model`, as NumPy arrays."""
    weights, biases = [], []
    for layer in model.layers:
        if layer.weights:
            W, b = layer.get_weights()
            weights.append(W)
            biases.append(b)
    return weights, biases


# ---------------------------------------------------------------------------- the batches
def batch_orders(net: MLP, n: int, epochs: int, shuffle: bool = True) -> list[np.ndarray]:
    """The order of the examples in each epoch, exactly as ``net.fit(..., shuffle=shuffle)``
    will draw it: ``net.rng.permutation(n)`` once per epoch (``range(n)`` without shuffling).

    Call it on a fresh ``net`` whose generator has drawn only the initial weights (it advances
    the generator as ``fit`` would; to fit the NumPy model too, build a second one from the same
    config: same seed, same weights, same orders).
    """
    if not shuffle:
        return [np.arange(n) for _ in range(epochs)]
    return [net.rng.permutation(n) for _ in range(epochs)]


def _index_dataset(
    tf, orders: list[np.ndarray] | None, n: int, epochs: int, batch_size: int, seed: int, shuffle
):
    """A ``tf.data`` dataset of index batches; iteration ``k`` is epoch ``k + 1``.

    With ``orders`` (the NumPy model's orders): each new iteration yields the next epoch's order
    in consecutive slices of ``batch_size``, the last one possibly smaller, as ``MLP.fit`` does.
    Without: ``tf.data``'s own seeded shuffle, reshuffled every epoch (or no shuffle).
    """
    steps = math.ceil(n / batch_size)
    if orders is None:
        indices = tf.data.Dataset.range(n)
        if shuffle:
            indices = indices.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return indices.batch(batch_size), None

    served = {"epochs": 0}

    def next_order():
        if served["epochs"] >= epochs:
            raise BaselineError(f"Keras asked for more than the {epochs} epochs configured")
        order = orders[served["epochs"]]
        served["epochs"] += 1
        yield order

    dataset = tf.data.Dataset.from_generator(
        next_order, output_signature=tf.TensorSpec(shape=(n,), dtype=tf.int64)
    )
    dataset = dataset.flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order))
    dataset = dataset.batch(batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset, served


# ---------------------------------------------------------------------------- training
def _keras_callbacks(
    keras, info: dict[str, int], callbacks: Sequence[Callback], model_ref, scheduled: bool
):
    """A Keras callback that times each epoch's training (validation excluded) and hands each
    epoch's row, with :meth:`mlp.MLP.fit`'s history keys, to ``callbacks``."""

    class EpochRows(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history: dict[str, list[float]] = {
                "epoch": [],
                "loss": [],
                "accuracy": [],
                "seconds": [],
            }
            if scheduled:
                self.history["learning_rate"] = []
            self._start = 0.0
            self._seconds: float | None = None

        def on_train_begin(self, logs=None):
            for cb in callbacks:
                cb.on_train_begin(model_ref, info)

        def on_epoch_begin(self, epoch, logs=None):
            for cb in callbacks:
                cb.on_epoch_begin(epoch + 1)
            self._seconds = None
            self._start = time.perf_counter()

        def on_test_begin(self, logs=None):  # validation starts: training of the epoch is done
            if self._seconds is None:
                self._seconds = time.perf_counter() - self._start

        def on_epoch_end(self, epoch, logs=None):
            seconds = self._seconds
            if seconds is None:
                seconds = time.perf_counter() - self._start
            logs = dict(logs or {})
            row = {
                "epoch": epoch + 1,
                "loss": float(logs["loss"]),
                "accuracy": float(logs["accuracy"]),
                "seconds": seconds,
            }
            if "val_loss" in logs:
                row["val_loss"] = float(logs["val_loss"])
                row["val_accuracy"] = float(logs["val_accuracy"])
            if "learning_rate" in self.history:
                row["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
            if not math.isfinite(row["loss"]):
                raise BaselineError(
                    f"the TensorFlow baseline diverged: the training loss became {row['loss']} "
                    f"in epoch {epoch + 1}; try a smaller learning rate"
                )
            for key, value in row.items():
                self.history.setdefault(key, []).append(value)
            for cb in callbacks:
                cb.on_epoch_end(epoch + 1, row)

        def on_train_end(self, logs=None):
            for cb in callbacks:
                cb.on_train_end(self.history)

    return EpochRows()


def train_keras(
    cfg: Config,
    data: Dataset,
    net: MLP | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    same_batches: bool | None = None,
    validate: bool = True,
):
    """Train the configured network in Keras from ``net``'s initial weights.

    ``net`` defaults to ``build_model(cfg)``; it must be fresh (its generator has drawn only the
    initial weights), and is left untouched apart from its generator. ``same_batches`` defaults
    to ``cfg.baseline.same_batches``. With ``validate`` and a validation split, ``val_loss`` and
    ``val_accuracy`` are computed after every epoch, as ``MLP.fit`` does. Returns the Keras
    model and the history under ``MLP.fit``'s keys (``epoch``, ``loss``, ``accuracy``,
    ``seconds``, ``val_loss``, ``val_accuracy``); ``seconds`` is the wall time of each epoch's
    training steps only (validation excluded), the first one including the graph's tracing.
    """
    import keras
    import tensorflow as tf

    check_supported(cfg)
    if net is None:
        net = build_model(cfg, data.X_train.shape[1])
    if same_batches is None:
        same_batches = cfg.baseline.same_batches
    t = cfg.train
    dtype = np.dtype(t.dtype)
    n = data.X_train.shape[0]
    if n == 0:
        raise BaselineError("no training images")
    batch_size = min(t.batch_size, n)  # as MLP.fit
    steps = math.ceil(n / batch_size)
    orders = batch_orders(net, n, t.epochs, t.shuffle) if same_batches else None

    tf.random.set_seed(cfg.seed)  # TensorFlow's own shuffle (same_batches off) is seeded
    with floatx(t.dtype), tf.device("/CPU:0" if cfg.baseline.device == "cpu" else "/GPU:0"):
        model = build_keras_model(cfg, net)
        X = tf.constant(data.X_train.astype(dtype, copy=False))
        y = tf.constant(data.y_train.astype(np.int64, copy=False))
        indices, served = _index_dataset(tf, orders, n, t.epochs, batch_size, cfg.seed, t.shuffle)
        train = indices.map(
            lambda idx: (tf.gather(X, idx), tf.gather(y, idx)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        ).prefetch(tf.data.AUTOTUNE)
        validation = None
        if validate and len(data.y_val):
            validation = (data.X_val.astype(dtype, copy=False), data.y_val.astype(np.int64))
        info = {
            "epochs": t.epochs,
            "steps_per_epoch": steps,
            "n_samples": n,
            "batch_size": batch_size,
        }
        schedule = build_schedule(cfg)
        rows = _keras_callbacks(keras, info, callbacks, model, schedule is not None)
        keras_callbacks = [rows]
        if schedule is not None:
            base_rate = cfg.optimizer.learning_rate

            def rate(epoch: int, current: float) -> float:  # Keras counts epochs from 0
                return base_rate * schedule.factor(epoch + 1, t.epochs)

            keras_callbacks.insert(0, keras.callbacks.LearningRateScheduler(rate))
        model.fit(
            train,
            epochs=t.epochs,
            validation_data=validation,
            validation_batch_size=EVAL_BATCH_SIZE,
            callbacks=keras_callbacks,
            shuffle=False,  # the index dataset does the shuffling
            verbose=0,
        )
    if served is not None and served["epochs"] != t.epochs:
        raise BaselineError(
            f"Keras trained on {served['epochs']} epochs' batches, not the {t.epochs} configured"
        )
    iterations = int(model.optimizer.iterations.numpy())
    if iterations != t.epochs * steps:
        raise BaselineError(
            f"Keras took {iterations} optimiser steps, not the {t.epochs} x {steps} configured"
        )
    return model, rows.history


def predict_proba(model, X: np.ndarray, dtype: str) -> np.ndarray:
    """Output activations of a Keras model for ``X`` (class probabilities), as NumPy."""
    with floatx(dtype):
        return model.predict(X.astype(dtype, copy=False), batch_size=EVAL_BATCH_SIZE, verbose=0)


def load_keras_model(path):
    """A model written by the ``baseline`` stage (``.keras``), custom loss included."""
    import keras

    _sum_squared_error()  # registers the ``sse`` loss for deserialisation
    return keras.saving.load_model(path)


# ---------------------------------------------------------------------------- as a framework
class _EpochLog(Callback):
    """One log line per epoch (Keras trains without its progress bar, whose per-step hook would
    slow it down)."""

    def on_train_begin(self, model: Any, info: dict[str, int]) -> None:
        self.epochs = info["epochs"]

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        line = f"epoch {epoch}/{self.epochs}: loss {logs['loss']:.4f}, acc {logs['accuracy']:.4f}"
        if "val_loss" in logs:
            line += f", val_loss {logs['val_loss']:.4f}, val_acc {logs['val_accuracy']:.4f}"
        log.info("%s (%.2f s)", line, logs["seconds"])


class Keras:
    """The baseline as a :class:`~pipeline.training.frameworks.Framework`: the configured network
    in TensorFlow/Keras, started from the NumPy model's initial weights."""

    name = "tensorflow"
    library = "TensorFlow/Keras"
    model_flavor = "keras"

    def __init__(self) -> None:
        self.unit = "CPU"
        self.threads: int | None = None

    def prepare(self, cfg: Config) -> None:
        check_supported(cfg)
        tf, _ = import_tensorflow(cfg.baseline.device)  # a missing GPU stops here
        self.unit = processing_unit(cfg.baseline.device)
        self.threads = set_tensorflow_threads(tf, cfg)

    def tags(self, cfg: Config) -> dict[str, str]:
        tags = {
            "library": self.name,
            "processing_unit": self.unit,
            "baseline.same_batches": str(cfg.baseline.same_batches).lower(),
        }
        if self.threads:
            tags[TENSORFLOW_THREADS_TAG] = str(self.threads)
        return tags

    def train(self, cfg: Config, data: Dataset, callbacks: Sequence[Callback]):
        net = build_model(cfg, data.X_train.shape[1])
        return train_keras(cfg, data, net, [_EpochLog(), *callbacks])

    def predict_proba(self, cfg: Config, model: Any, X: np.ndarray) -> np.ndarray:
        return predict_proba(model, X, cfg.train.dtype)

    def save(self, model: Any, path: Path) -> Path:
        """``model.save`` all-or-nothing: written in a temporary folder beside ``path``, renamed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            tmp = tmp_dir / path.name
            model.save(tmp)
            mask = os.umask(0o022)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return path

    def describe(self, cfg: Config, model: Any, history: History) -> dict[str, Any]:
        """The run's settings, how Keras was fed and compiled, the versions."""
        import importlib.metadata

        import tensorflow as tf

        same = cfg.baseline.same_batches
        if not cfg.train.shuffle:
            batches = "in the stored order, as the NumPy MLP (train.shuffle is false)"
        elif same:
            batches = (
                "the NumPy MLP's: each epoch's order is its generator's permutation, cut into "
                "consecutive batches (the last one partial), fed through tf.data"
            )
        else:
            batches = f"tf.data's own shuffle (seed {cfg.seed}), reshuffled every epoch"
        return {
            "library": self.library,
            "tensorflow_version": tf.__version__,
            "keras_version": importlib.metadata.version("keras"),
            "processing_unit": self.unit,
            "device": cfg.baseline.device,
            "same_batches": same,
            "batches": batches,
            "jit_compile": bool(model.jit_compile),
            "steps_per_execution": STEPS_PER_EXECUTION,
            "epochs": cfg.train.epochs,
            "batch_size": cfg.train.batch_size,
            "learning_rate": cfg.optimizer.learning_rate,
            "optimizer": cfg.optimizer.name,
            "dtype": cfg.train.dtype,
            "first_epoch_seconds": history["seconds"][0],
            "threads": self.threads,
        }
