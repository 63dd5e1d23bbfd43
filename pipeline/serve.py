"""Serve a registered model over HTTP: by default ``models:/mnist-mlp@champion``, the best model
a sweep has found.

Usage: ``python -m pipeline.serve [--port 5001] [--model URI]`` (``make serve``). It opens the
project's MLflow store (``MLFLOW_TRACKING_URI``, else the embedded one), checks that the model is
there, then becomes ``mlflow models serve`` on 127.0.0.1, in this environment (no conda or
virtualenv is created). Query it with ``POST /invocations`` and ``{"inputs": [[784 pixels in
[0, 1]], ...]}``; it answers ``{"predictions": [[10 class probabilities], ...]}``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from pipeline import cli, tracking
from pipeline.errors import UsageError
from pipeline.names import CHAMPION, REGISTERED_MODEL

DEFAULT_MODEL = f"models:/{REGISTERED_MODEL}@{CHAMPION}"


def serve_command(model: str, host: str, port: int) -> list[str]:
    """The ``mlflow models serve`` command line (the ``mlflow`` beside this Python)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [
        str(mlflow), "models", "serve", "-m", model, "--env-manager", "local",
        "--host", host, "--port", str(port),
    ]  # fmt: skip


def _require_free(host: str, port: int) -> None:
    """A :class:`UsageError` when something listens on ``host:port`` already."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot serve on {host}:{port} ({exc.strerror}): choose another port with "
                "--port (make serve SERVE_PORT=...)"
            ) from None


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser("python -m pipeline.serve", __doc__.splitlines()[0], params=False)
    arguments.add_argument("--model", default=DEFAULT_MODEL, help="model URI (%(default)s)")
    arguments.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    arguments.add_argument("--port", type=int, default=5001, help="port (%(default)s)")
    arguments.add_argument(
        "--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or the project's)"
    )
    args = arguments.parse_args(argv)
    cli.setup_logging()
    found: dict[str, str] = {}

    def work() -> None:
        _require_free(args.host, args.port)
        uri, _ = tracking.open_store(args.uri)
        found["version"] = tracking.require_model(uri, args.model)
        found["uri"] = uri

    status = cli.run(work)
    if status != cli.OK:
        return status
    where = f"http://{args.host}:{args.port}/invocations"
    # flushed: this process becomes the server next, and its buffers go with it
    print(f"serving {args.model} ({found['version']}) on {where}", flush=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": found["uri"]}
    # `mlflow models serve` starts uvicorn by name: this environment's, first on the path.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = serve_command(args.model, args.host, args.port)
    os.execve(command[0], command, env)
    return cli.FAILED  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
