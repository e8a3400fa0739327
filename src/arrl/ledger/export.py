"""A run's ledger as files other tools read (`arrl export`, and `arrl report` first).

`runs/<name>/exports/` gets:
- `<table>.parquet` for every ledger table in TABLES, always all of them, with one Arrow schema
  per table built from the ledger's declared column types (INTEGER -> int64, REAL -> float64,
  TEXT -> string). The schema is the current ledger's (arrl.ledger.store.SCHEMA), whatever the run's
  ledger holds: a table or column an older ledger lacks is written empty, a table with no rows
  still has its typed columns. So any two runs' exports read together (DuckDB's
  `read_parquet([...])`, `pyarrow.dataset`) with no casts. docs/REPORTS.md lists the columns.
- `meta.parquet`: the ledger's meta records (`key`, `value` as JSON text).
- `results.tsv` in autoresearch's layout, `commit val_bpb memory_gb status description`, one
  row per idea so that its analysis notebook computes the right numbers (see `results_rows`).
"""

from __future__ import annotations

import csv
import sqlite3
import statistics
from pathlib import Path

from arrl.ledger.queries import NOT_RUN  # a candidate with these statuses never trained: not an idea tried
from arrl.ledger.reader import open_read_only

TABLES = ("experiments", "proposals", "accepted", "policy_versions", "samples", "events", "test_scores", "archive")
ARROW_TYPES = {"INTEGER": "int64", "REAL": "float64", "TEXT": "string"}
RESULTS_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")


def columns() -> dict[str, list[tuple[str, str]]]:
    """Each exported table's (column, declared SQLite type), from the ledger's current schema."""
    from arrl.ledger import store

    db = sqlite3.connect(":memory:")
    try:
        db.executescript(store.SCHEMA)
        for table, added in store.ADDED_COLUMNS.items():
            have = {c[1] for c in db.execute(f"PRAGMA table_info({table})")}
            for name, kind in added:
                if name not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        return {t: [(c[1], c[2].upper() if c[2].upper() in ARROW_TYPES else "TEXT")
                    for c in db.execute(f"PRAGMA table_info({t})")] for t in TABLES + ("meta",)}
    finally:
        db.close()


def schema(table: str):
    """The Arrow schema of one exported table."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, ARROW_TYPES[kind])()) for name, kind in columns()[table]])


def _cell(v, kind: str):
    """A ledger value as its column's type (SQLite lets a cell hold any type; an export must not): a
    value that is not one (text in a number column, a float past int64) is written null."""
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    try:
        if kind == "INTEGER":
            i = int(v) if not isinstance(v, float) or v.is_integer() else None
            return i if i is not None and -2 ** 63 <= i < 2 ** 63 else None
        if kind == "REAL":
            return float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if isinstance(v, str) else str(v)


def _table(db: sqlite3.Connection, table: str, cols: list[tuple[str, str]]):
    import pyarrow as pa

    have = {c[1] for c in db.execute(f"PRAGMA table_info({table})")}
    rows = [dict(r) for r in db.execute(f"SELECT * FROM {table}")] if have else []
    return pa.table({name: pa.array([_cell(r.get(name) if name in have else None, kind) for r in rows],
                                    getattr(pa, ARROW_TYPES[kind])()) for name, kind in cols})


def export(d: Path) -> list[Path]:
    """Write the run's exports (see the module docstring); returns the files written."""
    import pyarrow.parquet as pq

    out = Path(d) / "exports"
    out.mkdir(exist_ok=True)
    reader = open_read_only(d)
    db = reader.db
    paths = []
    try:
        cols = columns()
        for table in TABLES + ("meta",):
            p = out / f"{table}.parquet"
            pq.write_table(_table(db, table, cols[table]), p)
            paths.append(p)
        p = out / "results.tsv"
        with open(p, "w", newline="") as f:  # tab-separated; a field with a quote is quoted, as pandas reads it
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(RESULTS_COLUMNS)
            w.writerows(results_rows(db))
        paths.append(p)
    finally:
        reader.close()
    return paths


def _short(text: str, n: int = 200) -> str:
    return " ".join((text or "").split())[:n]


def results_rows(db: sqlite3.Connection) -> list[tuple[str, ...]]:
    """results.tsv's rows, one per idea, in the order the loop decided them. autoresearch's notebook
    takes the first row as the baseline and the kept rows, in file order, as the chain of
    improvements (each one's gain over the kept row before it), and its keep rate is kept over kept
    plus discarded. So:
    - row 1 is the baseline, `keep`, at the robust value the run measured against (the median of
      the baselines' runs), memory the largest of them;
    - each candidate that ran is one row where it was decided: an accepted one `keep` at its
      acceptance, with the value it was accepted at (the centre of its runs) and the short sha of
      its commit on the run's branch; one that ran and was not accepted `discard` at the median of
      its runs; one that produced no val_bpb `crash` (val_bpb and memory 0, as autoresearch writes);
    - the baselines' other runs and the confirmation runs of a candidate are in its row, not rows
      of their own (they are not ideas); a result answered from the ledger, and an edit that failed
      to apply or was refused (NOT_RUN), did not train: no row.
    experiments.parquet has every run."""
    db.row_factory = sqlite3.Row
    exp = [dict(r) for r in db.execute("SELECT * FROM experiments WHERE state='done' ORDER BY id")]
    acc = {r["exp_id"]: dict(r) for r in db.execute("SELECT * FROM accepted")}
    base = [e for e in exp if e["kind"] == "baseline"]
    ok = [e for e in base if e["status"] == "ok" and e["val_bpb"] is not None]
    out: list[tuple[float, int, tuple[str, ...]]] = []
    if base:
        bpb = statistics.median(e["val_bpb"] for e in ok) if ok else None
        mem = max((e["peak_rss_mb"] or 0) for e in base) / 1024
        desc = f"baseline: the unedited script, median of {len(ok)} run(s)"
        out.append((float("-inf"), 0, (f"e{base[0]['id']:06d}", f"{bpb or 0:.6f}", f"{mem:.1f}",
                                       "keep" if ok else "crash", desc)))
    confirms: dict[int, list[dict]] = {}
    for e in exp:
        if e["kind"] == "confirm" and e["parent"] is not None:
            confirms.setdefault(e["parent"], []).append(e)
    for e in exp:
        if e["kind"] != "candidate" or e["reused_from"] is not None or e["status"] in NOT_RUN:
            continue
        runs = [e] + confirms.get(e["id"], [])
        vals = [r["val_bpb"] for r in runs if r["status"] == "ok" and r["val_bpb"] is not None]
        mem = max((r["peak_rss_mb"] or 0) for r in runs) / 1024
        decided = max((r["finished"] or r["created"]) for r in runs)
        summary = _short(e["summary"] or "")
        if e["id"] in acc:
            a = acc[e["id"]]
            commit = (a["commit_sha"] or "")[:7] or f"e{e['id']:06d}"
            row = (commit, f"{a['val_bpb']:.6f}", f"{mem:.1f}", "keep", summary)
            decided = a["created"]
        elif e["status"] == "ok" and vals:
            row = (f"e{e['id']:06d}", f"{statistics.median(vals):.6f}", f"{mem:.1f}", "discard", summary)
        else:
            row = (f"e{e['id']:06d}", "0.000000", "0.0", "crash", _short(f"{e['status']}: {summary}"))
        out.append((decided, e["id"], row))
    return [r for _, _, r in sorted(out, key=lambda x: (x[0], x[1]))]
