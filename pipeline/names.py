"""One place for every name and size the pipeline shares: files, folders, metrics, optimisers.

Everything else imports these; a test checks that ``conf/`` and ``dvc.yaml`` agree with them.
"""

from __future__ import annotations

from pathlib import Path

# ---------------------------------------------------------------------------- MNIST
#: Pixels per image (28 x 28, flattened) and digit classes: the network's input and output sizes.
N_INPUTS = 784
N_CLASSES = 10
#: The four files of the MNIST distribution, by the key ``data.files`` uses for each.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
#: Images in the training and test files.
MNIST_COUNTS = {"train": 60_000, "test": 10_000}

# ---------------------------------------------------------------------------- files and folders
#: The project: the folder holding ``dvc.yaml``, ``conf/`` and this package.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"
PARAMS = Path("params.yaml")
RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")
PROCESSED = PROCESSED_DIR / "mnist.npz"
SUMMARY = PROCESSED_DIR / "summary.json"

MODEL = Path("models/model.npz")
BASELINE_MODEL = Path("models/baseline.keras")
REPORTS = Path("reports")
TRAIN_REPORTS = REPORTS / "train"
EVALUATE_REPORTS = REPORTS / "evaluate"
BASELINE_REPORTS = REPORTS / "baseline"
SWEEP_REPORTS = REPORTS / "sweep"
#: The evaluate stage's test metrics (``dvc metrics show``).
TEST_METRICS_FILE = REPORTS / "metrics.json"

# Inside a run's reports folder (``reports/train``, ``reports/baseline``, a sweep point's folder).
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
CURVES_FILE = "learning_curves.png"
INFO_FILE = "info.json"
#: A sweep point's row of the summary, in its job folder.
RESULT_FILE = "result.json"

# ---------------------------------------------------------------------------- metrics
#: The test metrics every evaluated run reports, in JSON and in MLflow.
TEST_METRICS = (
    "test_top1_accuracy",
    "test_cross_entropy",
    "test_micro_accuracy",
    "test_micro_precision",
    "test_micro_recall",
    "test_macro_f1",
)
#: ``mlp.metrics.classification_report`` key of each test metric.
TEST_METRIC_SOURCES = {name: name.removeprefix("test_") for name in TEST_METRICS}
#: Wall seconds of the training steps (validation excluded).
TRAIN_SECONDS = "train_seconds"
#: Cores that other processes kept busy, on average, while a run trained (metrics.json, MLflow).
OTHER_LOAD = "other_processes_cores"
#: MLflow tags: the BLAS threads a NumPy training used (per worker); the blocks each batch was
#: computed in and the threads that shared them (pipeline.threads); TensorFlow's threads of the
#: baseline.
BLAS_THREADS_TAG = "blas.threads"
BATCH_PARTS_TAG = "mlp.batch_parts"
WORKERS_TAG = "mlp.workers"
TENSORFLOW_THREADS_TAG = "tensorflow.threads"
#: ``MLP.fit``'s history keys -> the names of the per-epoch curves (CSV columns, MLflow metrics).
CURVES = {
    "epoch": "epoch",
    "loss": "train_loss",
    "accuracy": "train_accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "seconds": "epoch_seconds",
    "learning_rate": "learning_rate",
}
#: With early stopping: the epoch whose weights the model keeps, and the last epoch trained.
BEST_EPOCH = "best_epoch"
STOPPED_EPOCH = "stopped_epoch"

# ---------------------------------------------------------------------------- choices
#: ``optimizer.name``: plain SGD, SGD with (Nesterov) momentum, Adam.
OPTIMIZERS = ("sgd", "momentum", "adam")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "gpu")
#: ``train.schedule.name``: none, or a schedule of :mod:`mlp.schedules`.
SCHEDULES = ("none", "step", "exponential", "cosine")
#: Fields of ``optimizer`` that the named optimiser does not use: not logged as MLflow parameters
#: (``sgd`` and ``momentum`` are both :class:`mlp.SGD`; ``adam`` is :class:`mlp.Adam`).
OPTIMIZER_UNUSED = {
    "sgd": ("beta1", "beta2", "epsilon"),
    "momentum": ("beta1", "beta2", "epsilon"),
    "adam": ("momentum", "nesterov"),
}
#: Fields of ``train.schedule`` each schedule uses (the others are not logged as parameters).
SCHEDULE_USED = {
    "none": (),
    "step": ("step_size", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("warmup_epochs", "final_fraction"),
}
#: Fields of ``train.early_stopping`` logged only when it is enabled.
EARLY_STOPPING_FIELDS = ("monitor", "patience", "min_delta", "restore_best")

# ---------------------------------------------------------------------------- MLflow
#: The config keys (and sections) a person varies between runs: a run's MLflow parameters. The
#: rest of the config (mirrors, file digests, timeouts, tracking and baseline settings) is in
#: the run's ``config.yaml`` and its tags. Of ``optimizer``, only the fields the chosen optimiser
#: uses (:data:`OPTIMIZER_UNUSED`); of ``train.schedule`` and ``train.early_stopping``, only the
#: fields that act (:data:`SCHEDULE_USED`, :data:`EARLY_STOPPING_FIELDS`).
PARAM_KEYS = (
    "seed",
    "model",
    "optimizer",
    "train",
    "data.validation_size",
    "data.split_seed",
    "data.train_limit",
)
#: The name under which every training run logs its model, and the registered model that
#: collects the versions; the alias that names the best model a sweep has found.
MODEL_ARTIFACT = "model"
REGISTERED_MODEL = "mnist-mlp"
CHAMPION = "champion"
#: MLflow dataset contexts of the three parts of the split, and their dataset names.
DATASETS = {"training": "mnist-train", "validation": "mnist-validation", "test": "mnist-test"}
