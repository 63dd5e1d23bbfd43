"""The implementations the benchmark times: ours (:meth:`mlp.MLP.fit`) and its peers.

Each ``train_*`` function trains one configuration from the initial weights of the
:class:`mlp.MLP` built by :func:`initial_network` (same seed, same weights for everyone) and
returns the training wall seconds (only the training call: imports, data loading, model building
and evaluation are outside the clock) and the test top-1 accuracy. They run in a fresh process
each (:mod:`benchmarks.worker`), with the BLAS thread pools already limited.

=========  =====================================================================================
ours       ``MLP.fit(X, y, epochs, batch_size, SGD(learning_rate))`` as the policy of
           ``train.blas_threads`` and ``train.batch_parts: auto`` computes it with ``threads``
           cores (:func:`pipeline.threads.make_plan`: blocks per batch, workers, BLAS threads);
           ``ours-1`` and ``ours-all`` whole batches on one BLAS thread and on every thread
bare       :func:`benchmarks.bare_loop.train_bare`, a textbook NumPy loop of the same math; only
           the reference network (two tanh hidden layers); same batch order as ours
keras      ``keras.Sequential`` of ``Dense`` layers (softmax output),
           ``SparseCategoricalCrossentropy``, ``keras.optimizers.SGD``, compiled with Keras's
           defaults (``jit_compile="auto"``, one step per execution, no metrics), then
           ``model.fit(X, y, batch_size, epochs, shuffle=True)`` on the NumPy arrays; TensorFlow
           intra- and inter-op pools of ``threads`` threads. The first epoch includes tracing and
           XLA compilation, as it does for every user.
sklearn    ``MLPClassifier(solver="sgd", momentum=0, learning_rate="constant", alpha=0,
           shuffle=True, tol=0, early_stopping=False)``, ``max_iter`` = epochs (convergence
           checks can never stop it early). scikit-learn has no argument for initial weights:
           a ``warm_start`` estimator is first fitted for one epoch on one example per class
           (untimed; it only creates ``coefs_``/``intercepts_``), those are overwritten in
           place with our initial weights, and the timed ``fit`` continues from them (a fresh
           SGD optimiser without state, ``n_iter_`` restarts at 0).
torch      eager PyTorch: ``nn.Sequential`` of ``nn.Linear`` + ``nn.Tanh``/``nn.ReLU``
           (weights copied transposed), ``nn.CrossEntropyLoss`` on the logits,
           ``torch.optim.SGD``; each epoch ``torch.randperm`` shuffles the whole tensor once
           and the batches are slices of it; ``torch.set_num_threads(threads)``.
=========  =====================================================================================
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.bare_loop import train_bare
from benchmarks.configs import BenchConfig
from mlp import MLP, SGD, metrics
from pipeline.threads import AUTO, Plan, make_plan

#: Examples per forward pass when a peer predicts the test set (not a training parameter).
EVAL_BATCH_SIZE = 2048


@dataclass(frozen=True)
class TrainResult:
    seconds: float
    test_top1_accuracy: float


def initial_network(cfg: BenchConfig, seed: int) -> MLP:
    """Our network for ``cfg``; its initial weights are every implementation's."""
    return MLP(
        list(cfg.layer_sizes), list(cfg.activations), init=cfg.init, seed=seed, dtype="float32"
    )


# ---------------------------------------------------------------------------- ours and bare
def ours_plan(cfg: BenchConfig, threads: int) -> Plan:
    """How ``train.blas_threads`` and ``train.batch_parts: auto`` train ``cfg`` on ``threads``
    cores."""
    return make_plan(AUTO, AUTO, cfg.layer_sizes, cfg.batch_size, threads)


def train_ours(cfg: BenchConfig, data: dict, seed: int, threads: int) -> TrainResult:
    """Ours as the thread policy trains it on ``threads`` cores."""
    plan = ours_plan(cfg, threads)
    with threadpool_limits(plan.blas_threads, user_api="blas"):
        return _train_mlp(cfg, data, seed, batch_parts=plan.batch_parts, workers=plan.workers)


def train_ours_whole(cfg: BenchConfig, data: dict, seed: int, threads: int) -> TrainResult:
    """Ours on whole batches, on the ``threads`` BLAS threads the worker set up."""
    return _train_mlp(cfg, data, seed)


def _train_mlp(cfg: BenchConfig, data: dict, seed: int, **options) -> TrainResult:
    net = initial_network(cfg, seed)
    optimizer = SGD(cfg.learning_rate)
    start = time.perf_counter()
    net.fit(data["X_train"], data["y_train"], cfg.epochs, cfg.batch_size, optimizer, **options)
    seconds = time.perf_counter() - start
    return TrainResult(seconds, metrics.top1_accuracy(data["y_test"], net.predict(data["X_test"])))


def bare_not_applicable(cfg: BenchConfig) -> str | None:
    if tuple(cfg.activations) != ("tanh", "tanh", "softmax"):
        return "the bare loop implements only the reference network (two tanh hidden layers)"
    return None


def train_bare_loop(cfg: BenchConfig, data: dict, seed: int, threads: int) -> TrainResult:
    net = initial_network(cfg, seed)  # same weights; net.rng then draws the same batch order
    start = time.perf_counter()
    train_bare(
        data["X_train"],
        data["y_train"],
        net.weights,
        net.biases,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        rng=net.rng,
    )
    seconds = time.perf_counter() - start
    return TrainResult(seconds, metrics.top1_accuracy(data["y_test"], net.predict(data["X_test"])))


# ---------------------------------------------------------------------------- Keras
def keras_model(cfg: BenchConfig, seed: int):
    """The compiled Keras model of ``cfg``, holding our initial weights."""
    import keras

    net = initial_network(cfg, seed)
    layers = [keras.Input(shape=(cfg.layer_sizes[0],), dtype="float32")]
    layers += [
        keras.layers.Dense(units, activation=activation, dtype="float32")
        for units, activation in zip(cfg.layer_sizes[1:], cfg.activations, strict=True)
    ]
    model = keras.Sequential(layers)
    for layer, W, b in zip(model.layers, net.weights, net.biases, strict=True):
        layer.set_weights([W, b])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=cfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    return model


def train_keras(cfg: BenchConfig, data: dict, seed: int, threads: int) -> TrainResult:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    keras.utils.set_random_seed(seed)  # Keras's shuffling
    model = keras_model(cfg, seed)
    start = time.perf_counter()
    model.fit(
        data["X_train"],
        data["y_train"],
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        shuffle=True,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    probabilities = model.predict(data["X_test"], batch_size=EVAL_BATCH_SIZE, verbose=0)
    return TrainResult(seconds, metrics.top1_accuracy(data["y_test"], probabilities.argmax(1)))


# ---------------------------------------------------------------------------- scikit-learn
def sklearn_classifier(cfg: BenchConfig, X: np.ndarray, y: np.ndarray, seed: int):
    """An ``MLPClassifier`` for ``cfg`` holding our initial weights, ready for ``fit(X, y)``.

    scikit-learn takes no initial weights: the ``warm_start`` estimator is fitted for one epoch
    on one example of each class of ``y`` (which creates ``coefs_`` and ``intercepts_``), and
    those arrays are then overwritten in place with ours.
    """
    from sklearn.neural_network import MLPClassifier

    classifier = MLPClassifier(
        hidden_layer_sizes=list(cfg.layer_sizes[1:-1]),
        activation=cfg.hidden_activation,
        solver="sgd",
        alpha=0.0,
        batch_size=cfg.batch_size,
        learning_rate="constant",
        learning_rate_init=cfg.learning_rate,
        momentum=0.0,
        nesterovs_momentum=False,
        shuffle=True,
        random_state=seed,
        tol=0.0,
        n_iter_no_change=cfg.epochs + 10,
        early_stopping=False,
        warm_start=True,
        max_iter=1,
    )
    _, first_of_each_class = np.unique(y, return_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch of ten examples: not converged, batch clipped
        classifier.fit(X[first_of_each_class], y[first_of_each_class])
    net = initial_network(cfg, seed)
    ours = [*net.weights, *net.biases]
    theirs = [*classifier.coefs_, *classifier.intercepts_]
    for mine, its in zip(ours, theirs, strict=True):
        its[...] = mine
    classifier.set_params(max_iter=cfg.epochs)
    return classifier


def train_sklearn(cfg: BenchConfig, data: dict, seed: int, threads: int) -> TrainResult:
    from sklearn.exceptions import ConvergenceWarning

    X, y = data["X_train"], data["y_train"]
    classifier = sklearn_classifier(cfg, X, y, seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(X, y)
    seconds = time.perf_counter() - start
    if classifier.n_iter_ != cfg.epochs:
        raise RuntimeError(f"MLPClassifier ran {classifier.n_iter_} epochs, not {cfg.epochs}")
    return TrainResult(
        seconds, metrics.top1_accuracy(data["y_test"], classifier.predict(data["X_test"]))
    )


# ---------------------------------------------------------------------------- PyTorch
def torch_model(cfg: BenchConfig, seed: int):
    """``nn.Sequential`` of ``cfg`` with our initial weights, returning logits (the softmax is
    inside ``CrossEntropyLoss``)."""
    import torch
    from torch import nn

    hidden = {"tanh": nn.Tanh, "relu": nn.ReLU}[cfg.hidden_activation]
    net = initial_network(cfg, seed)
    modules: list[nn.Module] = []
    for i, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        linear = nn.Linear(*W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T))  # torch keeps (fan_out, fan_in)
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if i < len(net.weights) - 1:
            modules.append(hidden())
    return nn.Sequential(*modules)


def train_torch(cfg: BenchConfig, data: dict, seed: int, threads: int) -> TrainResult:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = torch_model(cfg, seed)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    X = torch.from_numpy(data["X_train"])  # shares the NumPy arrays' memory
    y = torch.from_numpy(data["y_train"])
    n, batch_size = X.shape[0], cfg.batch_size
    generator = torch.Generator().manual_seed(seed)

    start = time.perf_counter()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        X_epoch, y_epoch = X[order], y[order]
        for lo in range(0, n, batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(X_epoch[lo : lo + batch_size]), y_epoch[lo : lo + batch_size])
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        predicted = model(torch.from_numpy(data["X_test"])).argmax(1).numpy()
    return TrainResult(seconds, metrics.top1_accuracy(data["y_test"], predicted))


# ---------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Implementation:
    name: str
    label: str
    #: Modules it imports; a peer whose module is missing is skipped.
    modules: tuple[str, ...]
    #: Distributions whose versions the report records.
    distributions: tuple[str, ...]
    train: Callable[[BenchConfig, dict, int, int], TrainResult]
    #: Why it cannot train a configuration (``None``: it can).
    not_applicable: Callable[[BenchConfig], str | None] = lambda cfg: None
    install_hint: str = ""


IMPLEMENTATIONS: dict[str, Implementation] = {
    "ours": Implementation("ours", "mlp (NumPy)", ("numpy",), ("numpy",), train_ours),
    # Ours with a fixed BLAS thread count instead of the thread policy (``ours``), to judge it.
    "ours-1": Implementation("ours-1", "mlp, 1 thread", ("numpy",), ("numpy",), train_ours_whole),
    "ours-all": Implementation(
        "ours-all", "mlp, all threads", ("numpy",), ("numpy",), train_ours_whole
    ),
    "bare": Implementation(
        "bare", "bare NumPy loop", ("numpy",), ("numpy",), train_bare_loop, bare_not_applicable
    ),
    "keras": Implementation(
        "keras",
        "Keras/TensorFlow (CPU)",
        ("tensorflow", "keras"),
        ("tensorflow-cpu", "tensorflow", "keras"),
        train_keras,
        install_hint="pip install -e '.[bench]' (tensorflow-cpu and keras are core dependencies)",
    ),
    "sklearn": Implementation(
        "sklearn",
        "scikit-learn MLPClassifier",
        ("sklearn",),
        ("scikit-learn",),
        train_sklearn,
        install_hint="pip install -c constraints.txt -e '.[bench]'",
    ),
    "torch": Implementation(
        "torch",
        "PyTorch eager (CPU)",
        ("torch",),
        ("torch",),
        train_torch,
        install_hint="pip install -c constraints.txt -e '.[bench]' (the CPU build of torch)",
    ),
}
#: The peers, in the order they are run and reported (``ours`` is always run).
PEERS = ("bare", "keras", "sklearn", "torch")
#: Ours on fixed thread counts: run beside ``ours`` (the thread policy) when there are 2+ cores.
OURS_FIXED = ("ours-1", "ours-all")


def missing_modules(name: str) -> list[str]:
    """The modules implementation ``name`` needs that cannot be found (nothing is imported)."""
    return [m for m in IMPLEMENTATIONS[name].modules if importlib.util.find_spec(m) is None]


def split_available(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """``(available, skipped)``: the requested peers that are installed, in order, and why each
    of the others is skipped. Unknown names raise ``ValueError``."""
    unknown = [name for name in requested if name not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    available, skipped = [], {}
    for name in requested:
        missing = missing_modules(name)
        if missing:
            hint = IMPLEMENTATIONS[name].install_hint
            skipped[name] = f"not installed (no module {', '.join(missing)})" + (
                f"; install with `{hint}`" if hint else ""
            )
        else:
            available.append(name)
    return available, skipped
