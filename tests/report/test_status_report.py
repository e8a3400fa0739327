"""`arrl status`, `arrl export` and `arrl report` on a ledger with throughput, contended runs, test
scores, a robust noise record with a warning and a CPU placement, and on a ledger from an older arrl
that has none of them.

The ledgers are written through arrl.ledger.store.Store into real run directories (no Ray, no training), so
every number below is known: baselines 1.50, 1.52, 1.60 (median 1.52, mean 1.54), two accepted
edits (exp 4 at 1.41, exp 8 at 1.31), test scores for all three incumbents.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arrl import cli
from arrl.ledger import export
from arrl.report import figures
from arrl.report import tables as run_tables
from arrl.report import status as report
from arrl.report import summary
from arrl.ledger.store import Store

from ledgers import NOISE, age, build, thr  # hand-made ledgers, shared with test_export
from test_report import assert_drawn, decode_png, parse

@pytest.fixture
def ledger_run(tmp_path) -> Path:
    return build(tmp_path / "runs" / "gap-run")


def test_status_shows_noise_placement_contention_throughput_and_gap(ledger_run):
    text, finished = report.status_text(ledger_run)
    lines = text.splitlines()
    assert finished
    assert "best val_bpb 1.3100 (baseline 1.5200, the median of 3 ok), 2 accepted" in lines  # the median, not 1.54
    assert "noise sigma 0.0123 (robust, 4 dof)" in lines
    assert f"warning: {NOISE['warning']}" in lines
    assert ("placement: reserved, cores 0-1; workers 0 | 1; policy 0-1; learner 0-1 "
            "(2 cores: the policy shares them with the workers)") in lines
    assert "contended: 3 re-run(s) of an attempt that got too little compute, 1 run(s) ended contended" in lines
    # the incumbent (exp 8) stands on runs 8 and 9; the last runs with throughput are 1-6, 8, 9
    assert ("throughput (median): incumbent (exp 8, 2 runs): 305 steps, 3,050 tokens/s, cpu share 0.98; "
            "last 8 runs: 160 steps, 1,600 tokens/s, cpu share 0.96") in lines
    assert ("val/test gap: incumbent exp 8 test 1.3700 - val 1.3100 = +0.0600 (2 runs); "
            "start test 1.5600 - val 1.5200 = +0.0400 (3 runs)") in lines
    assert any(ln.startswith("by status: ") and "contended 1" in ln for ln in lines)


def test_status_of_the_starting_incumbent_and_an_unscored_one(tmp_path):
    d = build(tmp_path / "runs" / "r")
    s = Store(d)
    with s.tx():
        s.db.execute("DELETE FROM test_scores WHERE incumbent_id=8")
    s.close()
    assert "val/test gap: incumbent exp 8 not scored yet; start test 1.5600" in report.status_text(d)[0]
    s = Store(d)
    with s.tx():
        s.db.execute("DELETE FROM accepted")
        s.db.execute("UPDATE meta SET value=? WHERE key='noise'", (json.dumps({**NOISE, "warning": None}),))
    s.close()
    text = report.status_text(d)[0]
    assert "throughput (median): incumbent (3 baselines): 110 steps, 1,100 tokens/s, cpu share 0.95;" in text
    assert "val/test gap: incumbent start test 1.5600 - val 1.5200 = +0.0400 (3 runs)" in text.splitlines()
    assert "warning:" not in text


def test_export_has_test_scores_and_throughput_columns(ledger_run):
    import pyarrow.parquet as pq

    paths = export.export(ledger_run)
    assert ledger_run / "exports" / "test_scores.parquet" in paths
    scores = pq.read_table(ledger_run / "exports" / "test_scores.parquet").to_pylist()
    assert sorted((r["exp_id"], r["incumbent_id"], r["status"], r["test_bpb"]) for r in scores)[:2] == \
        [(1, 1, "ok", 1.55), (2, 1, "ok", 1.56)]
    assert len(scores) == 7 and [r for r in scores if r["exp_id"] == 5][0]["test_bpb"] is None
    exps = {r["id"]: r for r in pq.read_table(ledger_run / "exports" / "experiments.parquet").to_pylist()}
    want = thr(300, 3000.0, 0.97)
    assert {c: exps[8][c] for c in want} == want and set(want) <= set(run_tables.THROUGHPUT)
    assert exps[7]["steps"] is None and exps[7]["cpu_share"] is None


def test_export_and_status_of_an_older_ledger(ledger_run):
    import pyarrow.parquet as pq

    age(ledger_run)
    paths = export.export(ledger_run)
    scores = pq.read_table(ledger_run / "exports" / "test_scores.parquet")  # the table it lacks: empty, typed
    assert scores.num_rows == 0 and scores.schema == export.schema("test_scores") and paths[-1].name == "results.tsv"
    exp = pq.read_table(ledger_run / "exports" / "experiments.parquet")
    assert set(run_tables.THROUGHPUT) <= set(exp.column_names)  # present, empty
    assert all(r["steps"] is None for r in exp.to_pylist())
    text = report.status_text(ledger_run)[0]
    lines = text.splitlines()
    assert "noise sigma 0.0123" in lines  # no dof recorded: not called robust
    for gone in ("warning:", "placement:", "contended:", "throughput", "val/test gap"):
        assert gone not in text, gone
    paths = summary.write_report(ledger_run)
    assert [p.name for p in paths] == list(summary.FILES)
    assert len(parse(ledger_run / "report" / "summary.html").imgs) == 2


def test_report_writes_the_gap_figure_and_the_incumbents_table(ledger_run, capsys):
    rc = cli.main(["report", ledger_run.name, "--runs-dir", str(ledger_run.parent)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = ledger_run / "report"
    assert out.split() == [str(rep / f) for f in ("progress.png", "learning.png", "gap.png", "summary.html")]

    png = (rep / "gap.png").read_bytes()
    assert_drawn(decode_png(png))
    assert figures.png_metadata(png) == {"incumbents": 3, "scored": 3, "test_scores": 7}
    tables = run_tables.read_tables(ledger_run / "exports")
    fig = figures.gap_figure(tables, "gap-run", "synthetic")
    lines = {ln.get_gid(): (list(ln.get_xdata()), list(ln.get_ydata())) for a in fig.axes for ln in a.lines
             if ln.get_gid()}
    assert lines["val"] == ([1, 5, 9], [1.52, 1.41, 1.31])  # x: where each incumbent took over
    assert lines["test"] == ([1, 5, 9], [1.56, 1.45, 1.37])
    assert lines["gap"][1] == pytest.approx([0.04, 0.04, 0.06])

    # the progress data: the start is the baselines' median, the contended run has no comparable value
    prog = run_tables.progress_data(tables)
    assert prog["incumbent"][0] == (1, 1.52)
    assert (6, None, "candidate", "depth 5") in prog["points"]["failed"]
    assert [(t["id"], t["steps"], t["tokens_per_s"], t["cpu_share"]) for t in prog["throughput"]][-2:] == \
        [(8, 300, 3000.0, 0.97), (9, 310, 3100.0, 0.99)]

    page = parse(rep / "summary.html")
    assert len(page.imgs) == 3
    kv = dict(r for r in page.tables["kv key-numbers"])
    assert kv["noise σ"] == "0.0123 (robust, 4 dof)" and kv["noise warning"] == NOISE["warning"]
    assert kv["baseline val_bpb (median of ok baselines)"] == "1.5200"
    assert kv["val/test gap of the incumbent"] == "+0.0600 (test 1.3700, val 1.3100)"
    assert kv["contended"] == "3 re-run(s) after too little compute, 1 run(s) ended contended"
    assert kv["placement"].startswith("reserved, cores 0-1; workers 0 | 1")
    inc = page.tables["incumbents"]
    assert inc[0][:7] == ["incumbent", "from exp", "summary", "val_bpb", "test_bpb", "test runs", "gap (test − val)"]
    assert [r[0] for r in inc[1:]] == ["1", "4", "8"]
    assert [(r[3], r[4], r[5], r[6]) for r in inc[1:]] == [("1.5200", "1.5600", "3", "+0.0400"),
                                                          ("1.4100", "1.4500", "1 (+1 failed)", "+0.0400"),
                                                          ("1.3100", "1.3700", "2", "+0.0600")]
    timings = page.tables["timings"]
    assert timings[0][-3:] == ["median steps", "median tokens/s", "median cpu share"]
    assert {r[0]: r[-3:] for r in timings[1:]}["contended"] == ["40", "400", "0.21"]
    assert [r[0] for r in page.tables["throughput"][1:]] == ["1", "2", "3", "4", "5", "6", "8", "9"]
    assert [(r[0], r[1]) for r in page.tables["contended"][1:]] == [("4", "1"), ("6", "1"), ("6", "2")]
