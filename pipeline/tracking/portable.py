"""A SQLite store keeps its artifacts beside itself, also after the project is copied or moved.

MLflow records absolute artifact locations: an experiment created in ``/old/project`` stores
its runs' and models' files in ``file:///old/project/mlartifacts/...``, and a copy of the project
would go on writing there (or recreate that folder after a move). For a SQLite store this
project's rule is that artifacts live in ``mlartifacts/`` beside the ``.db`` file
(:func:`pipeline.tracking.store.artifact_location`). :func:`relocate_artifacts` enforces it when
a command opens the store: every location that ends in ``/mlartifacts`` (or lies below one) in
another folder is rewritten to the ``mlartifacts/`` beside the database, in the experiments, the
runs, the logged models and the registered model versions. A copy of the project carries its
``mlartifacts/`` along, so its older runs keep their files too.

``python -m pipeline.tracking`` does the same for the project's store (``make ui`` runs it first,
so that the UI shows a moved project's artifacts).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from pipeline.tracking.store import ARTIFACTS_DIR, TrackingError, artifact_location

log = logging.getLogger(__name__)

#: ``(table, column)`` of every absolute artifact location MLflow keeps in a SQLite store.
LOCATIONS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)
_SUFFIX = "/" + ARTIFACTS_DIR


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for anything else)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def _store_lock(db: Path) -> Iterator[None]:
    """The lock :func:`pipeline.tracking.store.store_client` creates a new store under."""
    import fcntl

    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def foreign_roots(connection: sqlite3.Connection, expected: str) -> list[str]:
    """Artifact roots ending in ``/mlartifacts`` that experiments record, other than
    ``expected``."""
    rows = connection.execute(
        "SELECT DISTINCT artifact_location FROM experiments WHERE artifact_location LIKE ?",
        ("%" + _SUFFIX,),
    ).fetchall()
    return sorted(root for (root,) in rows if root and root != expected)


def relocate_artifacts(uri: str) -> list[str]:
    """Point every artifact location of the SQLite store ``uri`` that lies in another folder's
    ``mlartifacts/`` at the ``mlartifacts/`` beside the database. Returns the old roots it
    replaced (none for a store that never moved, or for a store that is not SQLite)."""
    db = sqlite_path(uri)
    expected = artifact_location(uri)
    if db is None or expected is None or not db.exists():
        return []
    with _store_lock(db), contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
        try:
            old_roots = foreign_roots(connection, expected)
        except sqlite3.OperationalError:  # no tables yet: nothing recorded anywhere
            return []
        if not old_roots:
            return []
        try:
            with connection:  # one transaction: all or nothing
                for old in old_roots:
                    for table, column in LOCATIONS:
                        connection.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                            f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                            (expected, len(old) + 1, old, len(old) + 1, old + "/"),
                        )
        except sqlite3.Error as exc:
            raise TrackingError(
                f"the MLflow store {db} keeps its artifacts in {old_roots[0]}, outside its "
                f"folder (the project was copied or moved), and cannot be changed ({exc}): make "
                f"it writable, or point tracking.uri or MLFLOW_TRACKING_URI at another store"
            ) from None
    for old in old_roots:
        log.warning("MLflow store %s: artifacts moved from %s to %s", db, old, expected)
    return old_roots
