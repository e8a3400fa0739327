"""The exports as other tools read them: results.tsv through an analysis that follows autoresearch's
documented format (what its notebook computes), and the Parquet tables of two different runs read
together by DuckDB."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from arrl.ledger import export
from arrl.ledger.store import Store
from ledgers import age, build


def autoresearch_analysis(tsv: Path) -> dict:
    """What autoresearch's analysis notebook reports, computed from its documented format: a tab-separated
    file with columns commit, val_bpb, memory_gb, status (keep | discard | crash), description; the first
    row is the baseline, the kept rows in file order are the chain of improvements, each measured against
    the kept row before it; the plot's axis runs from the best kept value to the baseline."""
    import pandas as pd

    df = pd.read_csv(tsv, sep="\t")
    df["val_bpb"] = pd.to_numeric(df["val_bpb"], errors="coerce")
    df["memory_gb"] = pd.to_numeric(df["memory_gb"], errors="coerce")
    df["status"] = df["status"].str.strip().str.upper()
    counts = df["status"].value_counts()
    keep, discard = int(counts.get("KEEP", 0)), int(counts.get("DISCARD", 0))
    valid = df[df["status"] != "CRASH"].reset_index(drop=True)
    kept = df[df["status"] == "KEEP"]
    baseline, best = float(df.iloc[0]["val_bpb"]), float(kept["val_bpb"].min())
    plot_baseline = float(valid.loc[0, "val_bpb"])
    if not (math.isfinite(best) and math.isfinite(plot_baseline)):
        raise ValueError("axis limits cannot be NaN or Inf")
    best_row = kept.loc[kept["val_bpb"].idxmin()]
    deltas = (kept["val_bpb"].shift(1) - kept["val_bpb"]).iloc[1:]
    return {"columns": list(df.columns), "rows": len(df), "keep": keep, "discard": discard,
            "crash": int(counts.get("CRASH", 0)), "baseline": baseline, "best": best,
            "best_description": best_row["description"], "deltas": [float(x) for x in deltas],
            "total": float(deltas.sum()), "keep_rate": keep / (keep + discard)}


def test_results_tsv_gives_autoresearchs_analysis_the_right_numbers(tmp_path):
    d = build(tmp_path / "runs" / "two-accepted")  # baselines 1.50 1.52 1.60; 4 (+confirm 5) accepted at 1.41,
    export.export(d)                               # 6 contended, 7 crashed, 8 (+confirm 9) accepted at 1.31
    a = autoresearch_analysis(d / "exports" / "results.tsv")
    assert a["columns"] == list(export.RESULTS_COLUMNS)
    assert a["baseline"] == pytest.approx(1.52)  # the median the run measured against, not one baseline run
    assert a["best"] == pytest.approx(1.31) and a["best_description"] == "dropout 0.1"
    assert a["deltas"] == pytest.approx([0.11, 0.10])  # both accepted edits, each against the one before
    assert a["total"] == pytest.approx(1.52 - 1.31)  # the whole improvement, not half of it
    # one row per idea: the baseline, 4 candidates; the other baselines and the confirmations are in their rows
    assert (a["rows"], a["keep"], a["discard"], a["crash"]) == (5, 3, 0, 2)
    assert a["keep_rate"] == 1.0
    lines = (d / "exports" / "results.tsv").read_text().splitlines()
    assert lines[1].startswith("e000001\t1.520000\t") and "median of 3 run(s)" in lines[1]
    assert [ln.split("\t")[3] for ln in lines[1:]] == ["keep", "keep", "crash", "crash", "keep"]
    assert "contended: depth 5" in lines[3] and lines[3].split("\t")[1:3] == ["0.000000", "0.0"]


def test_results_tsv_of_a_run_with_nothing_accepted_still_analyses(tmp_path):
    d = build(tmp_path / "runs" / "none-accepted")
    db = sqlite3.connect(d / "ledger.sqlite")
    db.execute("DELETE FROM accepted")
    db.commit()
    db.close()
    export.export(d)
    a = autoresearch_analysis(d / "exports" / "results.tsv")
    assert a["baseline"] == a["best"] == pytest.approx(1.52) and a["deltas"] == [] and a["total"] == 0.0
    # the accepted-then-forgotten candidates are ideas that ran and were not kept: median of their runs
    assert (a["keep"], a["discard"]) == (1, 2) and a["keep_rate"] == pytest.approx(1 / 3)
    rows = [ln.split("\t") for ln in (d / "exports" / "results.tsv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows if r[3] == "discard"] == ["1.410000", "1.310000"]


def test_results_tsv_leaves_out_what_never_trained_and_quotes_what_needs_it(tmp_path):
    d = build(tmp_path / "runs" / "odd")
    s = Store(d)
    with s.tx():
        for status, bpb, summary in (("edit_failed", None, "no such knob"), ("rejected", None, "imports os"),
                                     ("ok", 1.45, '"quoted" at the start\tand a tab')):
            eid = s.add_experiment("candidate", seed=50, source_sha="s", norm_sha=f"n-{status}", summary=summary)
            s.finish(eid, status=status, val_bpb=bpb)
    s.close()
    db = sqlite3.connect(d / "ledger.sqlite")  # cells SQLite takes but no column type holds: exported null
    db.execute("UPDATE experiments SET val_bpb='not a number', steps=1e300, cores=x'00ff' WHERE id=7")
    db.commit()
    db.close()
    export.export(d)
    import pyarrow.parquet as pq

    row7 = [r for r in pq.read_table(d / "exports" / "experiments.parquet").to_pylist() if r["id"] == 7][0]
    assert row7["val_bpb"] is None and row7["steps"] is None and isinstance(row7["cores"], str)
    a = autoresearch_analysis(d / "exports" / "results.tsv")
    assert (a["rows"], a["keep"], a["discard"], a["crash"]) == (6, 3, 1, 2)  # one more idea tried: the quoted one
    assert a["total"] == pytest.approx(1.52 - 1.31)
    import pandas as pd

    df = pd.read_csv(d / "exports" / "results.tsv", sep="\t")
    assert df.iloc[-1]["description"] == '"quoted" at the start and a tab' and df.iloc[-1]["val_bpb"] == 1.45


def _empty_run(d: Path) -> Path:
    """A run where nothing was accepted and only one baseline finished: empty tables, all-null columns."""
    s = Store(d)
    with s.tx():
        eid = s.add_experiment("baseline", seed=0, source_sha="s", norm_sha="n")
        s.mark_running(eid, "w0")
        s.finish(eid, status="ok", val_bpb=2.5, train_s=10.0, wall_s=12.0)
        s.put("status", "finished")
    s.close()
    return d


def test_duckdb_reads_two_runs_exports_together_and_aggregates_every_numeric_column(tmp_path):
    import duckdb

    full = build(tmp_path / "runs" / "full")
    old = build(tmp_path / "runs" / "old")
    age(old)  # an older ledger: no throughput columns, no test_scores table
    empty = _empty_run(tmp_path / "runs" / "empty")
    runs = [full, old, empty]
    for d in runs:
        export.export(d)
    con = duckdb.connect()
    for table in export.TABLES + ("meta",):
        files = [str(d / "exports" / f"{table}.parquet") for d in runs]
        for d in runs:  # the same schema in every run, whatever its ledger held
            assert con.execute(f"DESCRIBE SELECT * FROM read_parquet('{files[0]}')").fetchall() == \
                con.execute(f"DESCRIBE SELECT * FROM read_parquet('{d / 'exports' / f'{table}.parquet'}')").fetchall()
        numeric = [n for n, kind in export.columns()[table] if kind in ("INTEGER", "REAL")]
        for col in numeric:
            n, avg = con.execute(f"SELECT count({col}), avg({col}) FROM read_parquet({files!r})").fetchone()
            assert n == 0 or math.isfinite(avg), (table, col)
    # the figures a user asks first, across runs, and on an empty table
    per_run = con.execute(
        "SELECT regexp_extract(filename, 'runs/([^/]+)/', 1) AS run, count(*), avg(val_bpb) FROM "
        f"read_parquet({[str(d / 'exports' / 'experiments.parquet') for d in runs]!r}, filename=true) "
        "WHERE status='ok' GROUP BY run ORDER BY run").fetchall()
    assert [(r, n) for r, n, _ in per_run] == [("empty", 1), ("full", 7), ("old", 7)]
    assert con.execute(f"SELECT avg(val_bpb), count(*) FROM read_parquet('{empty / 'exports' / 'accepted.parquet'}')"
                       ).fetchone() == (None, 0)
    steps = con.execute(f"SELECT sum(steps) FROM read_parquet('{old / 'exports' / 'experiments.parquet'}')").fetchone()
    assert steps == (None,)  # present, typed, empty in the older ledger
    meta = dict(con.execute(f"SELECT key, value FROM read_parquet('{full / 'exports' / 'meta.parquet'}')").fetchall())
    assert meta["status"] == '"finished"' and '"sigma"' in meta["noise"]


def test_the_documented_columns_are_the_exported_ones():
    """docs/REPORTS.md lists every exported table's columns; a column added to the ledger must be documented."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "REPORTS.md").read_text()
    for table, cols in export.columns().items():
        section = doc.split(f"`{table}.parquet`", 1)
        assert len(section) == 2, f"docs/REPORTS.md does not list {table}.parquet"
        block = section[1].split("\n\n", 1)[0]
        for name, kind in cols:
            assert f"`{name}`" in block, f"docs/REPORTS.md: {table}.parquet lacks `{name}`"
