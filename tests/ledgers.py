"""Hand-made ledgers for the report and export tests: written through arrl.ledger.store.Store into
real run directories (no Ray, no training), so every number is known: baselines 1.50, 1.52, 1.60
(median 1.52, mean 1.54), two accepted edits (exp 4 at 1.41, exp 8 at 1.31), test scores for all
three incumbents; `age` turns one into a ledger of an older arrl."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from arrl.ledger.store import Store
from arrl.report import tables as run_tables

NOISE = {"sigma": 0.0123, "raw": 0.011, "runs": 7, "dof": 4,
         "warning": "sigma 0.0123 is 6x the synthetic target's expected noise (0.002)"}
PLACEMENT = {"mode": "reserved", "cores": "0-1", "worker_cores": ["0", "1"], "policy_cores": "0-1",
             "learner_cores": "0-1", "why": "2 cores: the policy shares them with the workers"}
CONFIG = {"name": "gap-run", "target": "synthetic", "policy": {"kind": "scripted", "fmt": "search_replace"},
          "workers": {"count": 2, "sandbox": "simulated"}, "oracle": {"max_experiments": 20}}


def thr(steps, tps, share, cores="0"):
    return {"steps": steps, "tokens": steps * 64, "tokens_per_s": tps, "cpu_s": 30 * share, "cpu_share": share,
            "cores": cores}


def build(d: Path) -> Path:
    s = Store(d)
    (d / "config.json").write_text(json.dumps({**CONFIG, "name": d.name}))

    def run(kind, status, bpb, t=None, parent=None, summary=""):
        eid = s.add_experiment(kind, seed=len(s.experiments()), source_sha="s", norm_sha=f"n{kind}{parent}{summary}",
                               parent=parent, incumbent_id=1, summary=summary)
        s.mark_running(eid, "w0")
        s.finish(eid, status=status, val_bpb=bpb, train_s=30.0, wall_s=40.0, **(t or {}))
        return eid

    with s.tx():
        for bpb, t in ((1.50, thr(100, 1000.0, 0.90)), (1.52, thr(110, 1100.0, 0.95)), (1.60, thr(120, 1200.0, 1.0))):
            run("baseline", "ok", bpb, t)                                                        # 1, 2, 3
        run("candidate", "ok", 1.40, thr(200, 2000.0, 0.94, "1"), summary="decay 0.1")          # 4
        run("confirm", "ok", 1.42, thr(210, 2100.0, 0.98, "1"), parent=4)                        # 5
        s.accept(4, 1.41, 1.52)
        run("candidate", "contended", 1.90, thr(40, 400.0, 0.21), summary="depth 5")            # 6
        run("candidate", "crash", None, summary="width 32")                                      # 7
        run("candidate", "ok", 1.30, thr(300, 3000.0, 0.97), summary="dropout 0.1")             # 8
        run("confirm", "ok", 1.32, thr(310, 3100.0, 0.99), parent=8)                             # 9
        s.accept(8, 1.31, 1.41)
        s.event("accepted_runs", exp=8, runs=[8, 9])
        for attempt, exp, share in ((1, 4, 0.3), (1, 6, 0.2), (2, 6, 0.25)):
            s.event("contended", exp=exp, attempt=attempt, cpu_share=share, tokens_per_s=500.0,
                    reference={"cpu_share": 0.95, "tokens_per_s": 1100.0}, reason=f"cpu share {share} < 0.5 x 0.95")
        for exp, inc, status, bpb in ((1, 1, "ok", 1.55), (2, 1, "ok", 1.56), (3, 1, "ok", 1.70), (4, 4, "ok", 1.45),
                                      (5, 4, "crash", None), (8, 8, "ok", 1.36), (9, 8, "ok", 1.38)):
            s.add_test_score(exp, inc, status, bpb, "" if bpb else "no model")
        s.put("noise", NOISE)
        s.put("placement", PLACEMENT)
        s.put("status", "finished")
        s.put("wall_s", 100.0)
    s.close()
    return d


def age(d: Path) -> None:
    """Make the ledger one from before throughput, test scores, robust noise and placement."""
    db = sqlite3.connect(d / "ledger.sqlite")
    have = {r[1] for r in db.execute("PRAGMA table_info(experiments)")}
    for c in run_tables.THROUGHPUT:
        if c in have:
            db.execute(f"ALTER TABLE experiments DROP COLUMN {c}")
    db.execute("DROP TABLE test_scores")
    db.execute("DELETE FROM events WHERE kind='contended'")
    db.execute("UPDATE experiments SET status='timeout' WHERE status='contended'")
    db.execute("DELETE FROM meta WHERE key='placement'")
    db.execute("UPDATE meta SET value=? WHERE key='noise'", (json.dumps({"sigma": 0.0123, "raw": 0.011, "runs": 3}),))
    db.commit()
    db.close()


def kill_when(proc, d: Path, count_sql: str, n: int, seed: int, spread_s: float, timeout_s: float = 120.0) -> None:
    """SIGKILL a launch process's group once `count_sql` (a COUNT over its ledger) reaches `n`, after a random
    wait of up to `spread_s` seconds drawn from `seed`: a driver killed at a random moment with work recorded."""
    import os
    import random
    import signal
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = 0
        if (d / "ledger.sqlite").exists():
            db = sqlite3.connect(d / "ledger.sqlite")
            try:
                got = db.execute(count_sql).fetchone()[0]
            except sqlite3.OperationalError:  # the table is not there yet
                pass
            db.close()
        if got >= n:
            break
        time.sleep(0.2)
    time.sleep(random.Random(seed).uniform(0.0, spread_s))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
