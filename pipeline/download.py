"""DVC stage ``download``: the four MNIST files into ``data/raw/``, verified and atomically.

``MNIST_MIRROR`` (a folder, a ``file://`` or an ``http(s)://`` URL) is tried first, then every
mirror of ``data.mirrors``; a file is accepted only on the SHA-256 of its decompressed bytes
(:mod:`pipeline.data.fetch`). Reads ``data.mirrors``, ``data.files``, ``data.timeout``,
``data.retries`` and ``data.backoff``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import cli
from pipeline.config import Config
from pipeline.data.fetch import ENV_MIRROR, download_all
from pipeline.names import RAW_DIR


def run(cfg: Config, out: Path = RAW_DIR) -> None:
    data = cfg.data
    download_all(
        {key: {"filename": f.filename, "sha256": f.sha256} for key, f in data.files.items()},
        out,
        list(data.mirrors),
        env_mirror=os.environ.get(ENV_MIRROR) or None,
        timeout=data.timeout,
        retries=data.retries,
        backoff=data.backoff,
    )


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser(
        "python -m pipeline.download",
        "Download the four MNIST files into OUT, each verified by the SHA-256 of its "
        f"decompressed bytes. ${ENV_MIRROR} (a directory, file:// or http(s):// URL) is tried "
        "first, then data.mirrors from the params file. Files already present with the right "
        "digest are kept.",
        paths={"--out": (RAW_DIR, "folder for the .gz files")},
    )
    return cli.run_stage(arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
