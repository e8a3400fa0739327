"""The one read-only view of a run's ledger, for everything that only looks (`arrl status`, `arrl
report`, exports, benchmarks). It answers the same named queries as the driver's Store, over a
connection opened read-only: a live driver keeps writing, and WAL lets both go on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from arrl.ledger.queries import Queries

Error = sqlite3.Error  # any failure to read a ledger
DatabaseError = sqlite3.DatabaseError  # what a missing, locked or corrupt ledger raises


class Reader(Queries):
    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)
        self.db = sqlite3.connect(f"file:{self.root / 'ledger.sqlite'}?mode=ro", uri=True, timeout=10)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *_) -> None:
        self.close()


def open_read_only(run_dir: str | Path) -> Reader:
    """The run's ledger, read-only; use it as a context manager or close it."""
    return Reader(run_dir)
