"""The one read-only opener of a run's ledger, for everything that only looks (`arrl status`,
`arrl report`, exports, benchmarks), and the helpers that let it read ledgers of older arrl
versions (a table or column that did not exist yet)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

Error = sqlite3.Error  # any failure to read a ledger
DatabaseError = sqlite3.DatabaseError  # what a missing, locked or corrupt ledger raises


def open_read_only(run_dir: str | Path) -> sqlite3.Connection:
    """The run's ledger, read-only (a live driver keeps writing; WAL lets both go on), rows by name."""
    db = sqlite3.connect(f"file:{Path(run_dir) / 'ledger.sqlite'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    return db


def has_table(db: sqlite3.Connection, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [c[1] for c in db.execute(f"PRAGMA table_info({table})")]


def meta(db: sqlite3.Connection, key: str, default=None):
    """A value of the run's meta table (JSON), or `default` where it was never written."""
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def all_meta(db: sqlite3.Connection) -> dict:
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
