"""DVC stage ``preprocess``: the MNIST IDX files -> ``data/processed/mnist.npz`` and a summary.

Flattens each image to 784 float32 features in [0, 1] and carves a seeded, stratified validation
split of ``data.validation_size`` training images (:mod:`pipeline.data.mnist`). Reads
``data.split_seed`` (not the training ``seed``: the split belongs to the data),
``data.validation_size`` and the file names of ``data.files``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import cli
from pipeline.config import Config
from pipeline.data.mnist import preprocess
from pipeline.names import MNIST_COUNTS, PROCESSED_DIR, RAW_DIR


def run(cfg: Config, raw: Path = RAW_DIR, out: Path = PROCESSED_DIR) -> None:
    preprocess(
        raw,
        out,
        {key: spec.filename for key, spec in cfg.data.files.items()},
        validation_size=cfg.data.validation_size,
        split_seed=cfg.data.split_seed,
        expected_counts=MNIST_COUNTS,
    )


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser(
        "python -m pipeline.preprocess",
        "Turn the four MNIST IDX files in RAW into OUT/mnist.npz (X_* float32 (n, 784) in "
        "[0, 1], y_* uint8) and OUT/summary.json, with a stratified validation split of "
        "data.validation_size training images chosen by data.split_seed.",
        paths={
            "--raw": (RAW_DIR, "folder with the .gz files"),
            "--out": (PROCESSED_DIR, "folder for mnist.npz and summary.json"),
        },
    )
    return cli.run_stage(arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
